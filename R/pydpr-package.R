#' pydpr: differentially private deep learning with Keras from R
#'
#' Swap the optimizer to train a Keras model with DP-SGD, then ask how much
#' privacy the run spent:
#'
#' ```
#' model$compile(
#'   optimizer = optimizer_dp_adam(l2_norm_clip = 1, noise_multiplier = 1.1,
#'                                 learning_rate = 0.01),
#'   loss = "mse"
#' )
#' compute_epsilon(n = 3989, batch_size = 32, noise_multiplier = 1.1,
#'                 epochs = 20, delta = 1e-5)
#' ```
#'
#' Every function is a thin wrapper around the Python package `pydp_r`, found
#' through 'reticulate'. Point 'reticulate' at a Python that has it, either with
#' the environment variable `RETICULATE_PYTHON` or with [install_pydpr()]
#' followed by `reticulate::use_virtualenv("r-pydpr")`, before the first call.
#' Arguments are checked in R first, so a bad value fails with an error naming
#' the argument without starting Python; errors raised by Python reach R as R
#' errors carrying the Python message.
#'
#' @keywords internal
"_PACKAGE"

# The Python core, bound in .onLoad to a module that is imported on first use.
pydp_r <- NULL

.onLoad <- function(libname, pkgname) {
  pydp_r <<- reticulate::import(
    "pydp_r",
    delay_load = list(on_error = on_core_import_error)
  )
}

# Called by reticulate when the delayed import of the core fails.
on_core_import_error <- function(error) {
  message <- core_missing_message(conditionMessage(error))
  stop(error_condition(message, "pydpr_missing_core"))
}

#' Is the Python core of pydpr available?
#'
#' Tells whether the Python package `pydp_r` can be imported by the Python that
#' 'reticulate' uses. Starts Python if it is not running yet (and from then on
#' 'reticulate' stays with that Python for the session).
#'
#' @return `TRUE` or `FALSE`.
#' @seealso [install_pydpr()] to install it.
#' @export
#' @examples
#' if (pydp_r_available()) {
#'   compute_epsilon(n = 60000, batch_size = 256, noise_multiplier = 1.1,
#'                   epochs = 60, delta = 1e-5)
#' }
pydp_r_available <- function() {
  isTRUE(reticulate::py_module_available("pydp_r"))
}

core_missing_message <- function(detail = NULL) {
  paste0(
    "The Python package 'pydp_r' (the core of pydpr) could not be imported",
    if (!is.null(detail)) paste0(": ", trimws(detail)),
    ".\nInstall it with pydpr::install_pydpr(), restart R, and call ",
    "reticulate::use_virtualenv(\"r-pydpr\", required = TRUE) before using pydpr;",
    " or set the environment variable RETICULATE_PYTHON to a Python where ",
    "pydp-r is installed."
  )
}

# The Python module, or an error telling the user how to install it.
core <- function(call = NULL) {
  if (!pydp_r_available()) {
    stop(error_condition(core_missing_message(), "pydpr_missing_core", call))
  }
  warn_if_numpy_mismatch()
  pydp_r
}

# Calls function `name` of the Python core with a named list of arguments.
# `submodule` names the module that defines it ("accounting", "data", ...):
# importing `pydp_r.accounting` rather than reading `pydp_r$compute_epsilon`
# keeps accounting free of TensorFlow, whose import takes seconds.
# With `convert = FALSE` the result stays a Python object (for results holding
# NumPy arrays, which go through python_to_r()).
call_core <- function(name, args, call = NULL, submodule = NULL,
                      convert = TRUE) {
  module <- core(call)
  if (!is.null(submodule) || !convert) {
    module_name <- paste(c("pydp_r", submodule), collapse = ".")
    module <- reticulate::import(module_name, convert = convert)
  }
  call_python(module[[name]], args, call)
}

# Calls a Python callable with a named list of arguments; a Python exception
# becomes an R error of class `pydpr_python_error` with the Python message.
call_python <- function(callable, args, call = NULL) {
  tryCatch(
    do.call(callable, args),
    error = function(error) {
      message <- python_hints_in_r(sub("\\s+$", "", conditionMessage(error)))
      stop(error_condition(message, "pydpr_python_error", call))
    }
  )
}

error_condition <- function(message, class, call = NULL) {
  structure(
    class = c(class, "pydpr_error", "error", "condition"),
    list(message = message, call = call)
  )
}

# The call of the function whose frame is `env` (for error messages).
frame_call <- function(env) {
  frames <- sys.frames()
  for (i in rev(seq_along(frames))) {
    if (identical(frames[[i]], env)) {
      return(sys.call(i))
    }
  }
  NULL
}

# Python's error messages suggest fixes in Python syntax; from R the same fix is
# an R call: `model = pydp_r.replace_batch_norm(model)` becomes
# `model <- replace_batch_norm(model)`, `replacement='layer'` becomes
# `replacement = "layer"`.
python_hints_in_r <- function(message) {
  message <- gsub("`(\\w+) = pydp_r\\.", "`\\1 <- ", message)
  message <- gsub("pydp_r\\.(\\w+\\.)*(\\w+)\\(", "\\2(", message)
  message <- gsub("\\b(\\w+)='([^']*)'", "\\1 = \"\\2\"", message)
  message <- gsub("\\b(\\w+)=(True|False)\\b", "\\1 = \\U\\2", message, perl = TRUE)
  message
}
