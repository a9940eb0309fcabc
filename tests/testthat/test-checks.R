test_that("check_number accepts values in range and rejects the rest, naming the argument", {
  check <- function(x, ...) pydpr:::check_number(x, "rate", ...)
  expect_silent(check(0.5, min = 0, max = 1))
  expect_silent(check(0, min = 0, max = 1))
  expect_silent(check(NULL, null_ok = TRUE))
  expect_error(check(0, min = 0, max = 1, min_open = TRUE),
               "`rate` must be a number in (0, 1]; received 0.", fixed = TRUE)
  expect_error(check(1, min = 0, max = 1, max_open = TRUE), "`rate`")
  expect_error(check(NA_real_), "`rate`.*received NA")
  expect_error(check(NaN), "`rate`")
  expect_error(check("0.5"), "received \"0.5\"", fixed = TRUE)
  expect_error(check(c(1, 2)), "received a numeric vector of length 2",
               fixed = TRUE)
  expect_error(check(NULL), "received NULL", fixed = TRUE)
  expect_error(check(Inf, min = 0, max = Inf, max_open = TRUE), "`rate`")
  expect_error(check(list(1)), "received a list of length 1", fixed = TRUE)
})

test_that("check_count wants whole numbers", {
  expect_silent(pydpr:::check_count(3, "k"))
  expect_silent(pydpr:::check_count(3L, "k"))
  expect_silent(pydpr:::check_count(0, "k", min = 0))
  expect_error(pydpr:::check_count(2.5, "k"),
               "`k` must be a whole number >= 1; received 2.5.", fixed = TRUE)
  expect_error(pydpr:::check_count(0, "k"), "`k`")
  expect_error(pydpr:::check_count(TRUE, "k"), "`k`")
})

test_that("flag, string and choice checks", {
  expect_silent(pydpr:::check_flag(FALSE, "f"))
  expect_error(pydpr:::check_flag(NA, "f"), "`f` must be TRUE or FALSE")
  expect_error(pydpr:::check_flag(1, "f"), "`f`")
  expect_silent(pydpr:::check_string("a", "s"))
  expect_error(pydpr:::check_string("", "s"), "`s` must be a single non-empty string")
  expect_error(pydpr:::check_string(c("a", "b"), "s"), "character vector of length 2")
  expect_silent(pydpr:::check_choice("pld", "accountant", c("rdp", "pld")))
  expect_error(pydpr:::check_choice("RDP", "accountant", c("rdp", "pld")),
               "`accountant` must be one of \"rdp\", \"pld\"; received \"RDP\".",
               fixed = TRUE)
})

test_that("argument errors have their own class and the caller's call", {
  f <- function(n) pydpr:::check_count(n, "n")
  error <- expect_error(f(-1), class = "pydpr_argument_error")
  expect_identical(conditionCall(error), quote(f(-1)))
})

test_that("supplied_args forwards only what the caller gave, with integers coerced", {
  f <- function(a, b = 2, count = 10, ...) {
    pydpr:::supplied_args(match.call(expand.dots = FALSE), environment(),
                          integers = "count")
  }
  expect_identical(f(), structure(list(), names = character(0)))
  expect_identical(f(1), list(a = 1))
  expect_identical(f(1, count = 32), list(a = 1, count = 32L))
  expect_identical(f(a = 1, b = NULL), list(a = 1, b = NULL))
  expect_identical(f(1, extra = "x"), list(a = 1, extra = "x"))
  expect_error(f(1, 5, 6, "unnamed"), "`...` must be named arguments")
})

test_that("as_python_integer keeps values an R integer cannot hold", {
  expect_identical(pydpr:::as_python_integer(32), 32L)
  expect_identical(pydpr:::as_python_integer(2^31), 2^31)
  expect_identical(pydpr:::as_python_integer(NULL), NULL)
  expect_identical(pydpr:::as_python_integer(2.5), 2.5)
})

# R checks the accounting arguments before Python starts, so it keeps a copy of
# the Python core's ranges (R/checks.R). Both sides must agree on every range
# and word each refusal alike. The one deliberate difference is vocabulary: R
# says "whole number" where Python says "integer" (an R number is a double),
# and Python says "finite number" where R says "number".
python_wording_in_r <- function(message) {
  message <- sub("^ValueError: ", "", message)
  message <- sub("; received .*", "", message)
  message <- gsub("a positive integer", "a whole number >= 1", message,
                  fixed = TRUE)
  message <- gsub("an integer", "a whole number", message, fixed = TRUE)
  gsub("a finite number", "a number", message, fixed = TRUE)
}

r_wording <- function(message) {
  sub("; received .*", "", gsub("`", "", message))
}

test_that("R's accounting ranges are the Python core's", {
  skip_if_no_core()
  checks <- reticulate::import("pydp_r._checks", convert = TRUE)
  python_ranges <- checks$ACCOUNTING_RANGES
  expect_setequal(names(pydpr:::accounting_ranges), names(python_ranges))
  for (name in names(python_ranges)) {
    python_range <- python_ranges[[name]]
    for (field in names(pydpr:::accounting_ranges[[name]])) {
      expect_identical(
        pydpr:::accounting_ranges[[name]][[field]],
        if (is.logical(python_range[[field]])) python_range[[field]] else
          as.numeric(python_range[[field]]),
        label = paste0("accounting_ranges$", name, "$", field)
      )
    }
  }
  expect_identical(pydpr:::accountants, unlist(checks$ACCOUNTANTS))
  expect_identical(pydpr:::max_noise_multiplier, checks$MAX_NOISE_MULTIPLIER)
})

test_that("R and Python refuse the same bad accounting inputs in the same words", {
  skip_if_no_core()
  accounting <- reticulate::import("pydp_r.accounting", convert = TRUE)
  good <- list(n = 1000, batch_size = 32, noise_multiplier = 1.1, epochs = 2,
               delta = 1e-5)
  bad <- list(
    list("n", 0), list("n", -1), list("n", 10.5), list("n", "1000"),
    list("n", TRUE), list("n", Inf), list("n", c(1000, 2000)),
    list("batch_size", 0), list("batch_size", 2000), list("batch_size", 1.5),
    list("batch_size", 1e6),
    list("noise_multiplier", -0.1), list("noise_multiplier", 10000.5),
    list("noise_multiplier", 1e5), list("noise_multiplier", NaN),
    list("noise_multiplier", "1"),
    list("epochs", 0), list("epochs", -1), list("epochs", Inf),
    list("delta", 0), list("delta", 1), list("delta", 1.5), list("delta", NA_real_),
    list("accountant", "gdp"), list("accountant", 1)
  )
  for (row in bad) {
    arguments <- utils::modifyList(good, stats::setNames(list(row[[2]]), row[[1]]))
    label <- paste0(row[[1]], " = ", deparse(row[[2]]))
    from_r <- tryCatch(
      { do.call(compute_epsilon, arguments); "no error" },
      pydpr_argument_error = function(error) r_wording(conditionMessage(error))
    )
    from_python <- tryCatch(
      { do.call(accounting$compute_epsilon, arguments); "no error" },
      error = function(error) python_wording_in_r(conditionMessage(error))
    )
    expect_match(from_r, paste0("^", row[[1]], " must be "), label = label)
    expect_identical(from_r, from_python, label = label)
  }
  # The boundaries both accept, and an accountant in TF Privacy's capitals.
  for (changes in list(list(noise_multiplier = 1e4), list(noise_multiplier = 0),
                       list(batch_size = 1000), list(epochs = 0.01),
                       list(accountant = "RDP"))) {
    arguments <- utils::modifyList(good, changes)
    expect_identical(do.call(compute_epsilon, arguments),
                     do.call(accounting$compute_epsilon, arguments))
  }
})
