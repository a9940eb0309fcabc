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
