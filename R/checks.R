# Argument checks run in R before any Python call, so that a bad value fails
# fast, names the argument, and leaves Python untouched. Each error says what
# the argument must be and what was received. Ranges match the Python core's.

check_number <- function(x, arg, min = -Inf, max = Inf, min_open = FALSE,
                         max_open = FALSE, null_ok = FALSE, whole = FALSE,
                         call = frame_call(parent.frame())) {
  if (is.null(x) && null_ok) {
    return(invisible(x))
  }
  ok <- is.numeric(x) && length(x) == 1L && !is.na(x) &&
    (!whole || (is.finite(x) && x == trunc(x))) &&
    (if (min_open) x > min else x >= min) &&
    (if (max_open) x < max else x <= max)
  if (!ok) {
    what <- paste(
      if (whole) "a whole number" else "a number",
      describe_range(min, max, min_open, max_open)
    )
    if (null_ok) what <- paste(what, "or NULL")
    argument_error(arg, what, x, call)
  }
  invisible(x)
}

check_count <- function(x, arg, min = 1, null_ok = FALSE,
                        call = frame_call(parent.frame())) {
  check_number(x, arg, min = min, null_ok = null_ok, whole = TRUE, call = call)
}

check_flag <- function(x, arg, call = frame_call(parent.frame())) {
  if (!(is.logical(x) && length(x) == 1L && !is.na(x))) {
    argument_error(arg, "TRUE or FALSE", x, call)
  }
  invisible(x)
}

check_string <- function(x, arg, null_ok = FALSE,
                         call = frame_call(parent.frame())) {
  if (is.null(x) && null_ok) {
    return(invisible(x))
  }
  if (!(is.character(x) && length(x) == 1L && !is.na(x) && nzchar(x))) {
    what <- paste0("a single non-empty string", if (null_ok) " or NULL")
    argument_error(arg, what, x, call)
  }
  invisible(x)
}

check_choice <- function(x, arg, choices, call = frame_call(parent.frame())) {
  if (!(is.character(x) && length(x) == 1L && !is.na(x) && x %in% choices)) {
    what <- paste0("one of ", paste0("\"", choices, "\"", collapse = ", "))
    argument_error(arg, what, x, call)
  }
  invisible(x)
}

check_python_object <- function(x, arg, what, call = frame_call(parent.frame())) {
  if (!inherits(x, "python.builtin.object")) {
    argument_error(arg, what, x, call)
  }
  invisible(x)
}

# A learning rate is a number >= 0 or a Python schedule or callable.
check_learning_rate <- function(x, call = frame_call(parent.frame())) {
  if (!inherits(x, "python.builtin.object")) {
    check_number(x, "learning_rate", min = 0, max = Inf, max_open = TRUE,
                 call = call)
  }
  invisible(x)
}

describe_range <- function(min, max, min_open, max_open) {
  if (is.infinite(min) && is.infinite(max)) {
    return("(finite)")
  }
  if (is.infinite(max)) {
    return(paste(if (min_open) ">" else ">=", format(min)))
  }
  if (is.infinite(min)) {
    return(paste(if (max_open) "<" else "<=", format(max)))
  }
  if (min_open && max_open) {
    return(paste0("in the open interval (", format(min), ", ", format(max), ")"))
  }
  paste0(
    "in ", if (min_open) "(" else "[", format(min), ", ", format(max),
    if (max_open) ")" else "]"
  )
}

describe_value <- function(x) {
  if (is.null(x)) {
    return("NULL")
  }
  if (inherits(x, "python.builtin.object")) {
    return(paste("a Python", class(x)[[1]]))
  }
  if (is.function(x)) {
    return("a function")
  }
  if (is.list(x) || length(x) != 1L) {
    type <- if (is.list(x)) "list" else if (is.numeric(x)) "numeric vector" else
      paste(typeof(x), "vector")
    return(sprintf("a %s of length %d", type, length(x)))
  }
  if (is.character(x)) {
    return(encodeString(x, quote = "\""))
  }
  if (is.numeric(x) || is.logical(x)) {
    return(format(x, digits = 15))
  }
  paste("an object of class", class(x)[[1]])
}

argument_error <- function(arg, what, x, call) {
  message <- sprintf("`%s` must be %s; received %s.", arg, what, describe_value(x))
  stop(error_condition(message, "pydpr_argument_error", call))
}

# The arguments the caller was given explicitly (formals and named `...`), as a
# named list ready for Python: only these are forwarded, so Python's own
# defaults apply to the rest. `integers` are coerced with as.integer(), since an
# R number such as 32 is a double and Python needs an int there.
supplied_args <- function(call, env, integers = character(),
                          error_call = frame_call(env)) {
  given <- setdiff(as.character(names(call)[-1L]), c("", "..."))
  args <- mget(given, envir = env)
  if ("..." %in% names(call)) {
    dots <- eval(quote(list(...)), env)
    dot_names <- names(dots)
    if (is.null(dot_names) || any(!nzchar(dot_names))) {
      argument_error(
        "...", "named arguments (passed to Python as keyword arguments)",
        dots, error_call
      )
    }
    args <- c(args, dots)
  }
  for (name in intersect(names(args), integers)) {
    args[name] <- list(as_python_integer(args[[name]]))
  }
  args
}

# Whole numbers become integers when they fit; others are left for Python.
as_python_integer <- function(x) {
  if (is.numeric(x) && length(x) == 1L && !is.na(x) && x == trunc(x) &&
      abs(x) <= .Machine$integer.max) {
    return(as.integer(x))
  }
  x
}

# The ranges of the accounting arguments: a copy of the Python core's table
# `pydp_r._checks.ACCOUNTING_RANGES` (and of its `ACCOUNTANTS`), so that R checks
# them without starting Python. tests/testthat/test-checks.R fails when the two
# tables differ, or when R and Python word an error over one range differently.
# `batch_size` is also at most `n`.
accounting_range <- function(minimum, maximum = Inf, minimum_open = FALSE,
                             maximum_open = FALSE, whole = FALSE) {
  list(minimum = minimum, maximum = maximum, minimum_open = minimum_open,
       maximum_open = maximum_open, whole = whole)
}

max_noise_multiplier <- 1e4

accounting_ranges <- list(
  n = accounting_range(1, whole = TRUE),
  batch_size = accounting_range(1, whole = TRUE),
  noise_multiplier = accounting_range(0, max_noise_multiplier),
  epochs = accounting_range(0, minimum_open = TRUE, maximum_open = TRUE),
  delta = accounting_range(0, 1, minimum_open = TRUE, maximum_open = TRUE),
  target_epsilon = accounting_range(0, minimum_open = TRUE, maximum_open = TRUE),
  max_examples_per_user = accounting_range(1, whole = TRUE),
  min_steps = accounting_range(1, whole = TRUE)
)

accountants <- c("rdp", "pld")

# Checks accounting argument `arg` against its row of `accounting_ranges`.
check_accounting_number <- function(x, arg, null_ok = FALSE,
                                    call = frame_call(parent.frame())) {
  range <- accounting_ranges[[arg]]
  check_number(x, arg, min = range$minimum, max = range$maximum,
               min_open = range$minimum_open, max_open = range$maximum_open,
               whole = range$whole, null_ok = null_ok, call = call)
}

# One of `accountants`, in any case, as in Python ("RDP" is TF Privacy's
# spelling); the value is passed on as given, Python lower-cases it.
check_accountant <- function(x, call = frame_call(parent.frame())) {
  if (!(is.character(x) && length(x) == 1L && !is.na(x) &&
        tolower(x) %in% accountants)) {
    what <- paste0("one of ", paste0("\"", accountants, "\"", collapse = ", "))
    argument_error("accountant", what, x, call)
  }
  invisible(x)
}
