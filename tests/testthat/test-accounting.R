test_that("bad accounting arguments fail in R, naming the argument", {
  epsilon <- function(...) {
    args <- utils::modifyList(
      list(n = 1000, batch_size = 32, noise_multiplier = 1.1, epochs = 2,
           delta = 1e-5),
      list(...)
    )
    do.call(compute_epsilon, args)
  }
  expect_error(epsilon(n = -1), "`n` must be a whole number >= 1; received -1.",
               fixed = TRUE)
  expect_error(epsilon(n = 10.5), "`n`")
  expect_error(epsilon(n = "1000"), "`n`")
  expect_error(epsilon(n = c(1000, 2000)), "`n`")
  expect_error(epsilon(batch_size = 0), "`batch_size`")
  expect_error(epsilon(batch_size = 2000),
               "`batch_size` must be a whole number in [1, n] = [1, 1000]; received 2000.",
               fixed = TRUE)
  expect_error(epsilon(noise_multiplier = -1), "`noise_multiplier`")
  expect_error(epsilon(noise_multiplier = NA), "`noise_multiplier`")
  # Python accounts noise multipliers up to 1e4 only; R used to pass any on.
  expect_error(epsilon(noise_multiplier = 1e5),
               "`noise_multiplier` must be a number in [0, 10000]; received 1e+05.",
               fixed = TRUE, class = "pydpr_argument_error")
  expect_error(epsilon(epochs = 0), "`epochs` must be a number > 0")
  expect_error(epsilon(epochs = Inf), "`epochs`")
  expect_error(epsilon(delta = 0), "`delta` must be a number in the open interval (0, 1)",
               fixed = TRUE)
  expect_error(epsilon(delta = 1), "`delta`")
  expect_error(epsilon(accountant = "gdp"), "`accountant` must be one of")
  expect_error(epsilon(used_microbatching = "no"), "`used_microbatching`")
  expect_error(
    compute_noise_multiplier(n = 1000, batch_size = 32, target_epsilon = 0,
                             epochs = 1, delta = 1e-5),
    "`target_epsilon` must be a number > 0"
  )
  expect_error(
    privacy_statement(n = 1000, batch_size = 32, noise_multiplier = 1,
                      epochs = 1, delta = 1e-5, max_examples_per_user = 0),
    "`max_examples_per_user`"
  )
  expect_error(
    compute_dp_sgd_privacy(n = 1000, batch_size = 32, noise_multiplier = 1,
                           epochs = -2, delta = 1e-5),
    "`epochs`"
  )
})

test_that("compute_epsilon() in R equals pydp_r.compute_epsilon in Python", {
  skip_if_no_core()
  core <- python_core()
  from_r <- compute_epsilon(n = 60000, batch_size = 256, noise_multiplier = 1.1,
                            epochs = 60, delta = 1e-5)
  from_python <- core$compute_epsilon(60000L, 256L, 1.1, 60, 1e-5)
  expect_identical(from_r, from_python)
  expect_gt(from_r, 0)

  pld <- compute_epsilon(n = 3989, batch_size = 32, noise_multiplier = 1.1,
                         epochs = 2.5, delta = 1e-5, accountant = "pld",
                         used_microbatching = TRUE)
  expect_identical(pld, core$compute_epsilon(3989L, 32L, 1.1, 2.5, 1e-5,
                                             accountant = "pld",
                                             used_microbatching = TRUE))
})

test_that("accountants are named in any case, as in Python", {
  skip_if_no_core()
  epsilon <- function(accountant) {
    compute_epsilon(n = 1000, batch_size = 50, noise_multiplier = 1.1,
                    epochs = 2, delta = 1e-5, accountant = accountant)
  }
  expect_identical(epsilon("PLD"), epsilon("pld"))
})

test_that("the documented maximum noise works and an unreachable target says why", {
  skip_if_no_core()
  expect_identical(
    compute_epsilon(n = 1000, batch_size = 1, noise_multiplier = 1e4,
                    epochs = 1, delta = 1e-5),
    0
  )
  error <- expect_error(
    compute_noise_multiplier(n = 1000, batch_size = 32, target_epsilon = 1e-6,
                             epochs = 1, delta = 1e-5),
    class = "pydpr_python_error"
  )
  expect_match(conditionMessage(error), "noise_multiplier <= 10000", fixed = TRUE)
  expect_match(conditionMessage(error), "fewer epochs", fixed = TRUE)
})

test_that("R's doubles work where Python needs integers (batch_size = 32)", {
  skip_if_no_core()
  as_doubles <- compute_epsilon(n = 3989, batch_size = 32,
                                noise_multiplier = 1.1, epochs = 20,
                                delta = 1e-5)
  as_integers <- compute_epsilon(n = 3989L, batch_size = 32L,
                                 noise_multiplier = 1.1, epochs = 20L,
                                 delta = 1e-5)
  expect_identical(as_doubles, as_integers)
})

test_that("more noise gives a smaller epsilon, and no noise gives Inf", {
  skip_if_no_core()
  epsilon <- function(noise) {
    compute_epsilon(n = 1000, batch_size = 50, noise_multiplier = noise,
                    epochs = 5, delta = 1e-5)
  }
  expect_gt(epsilon(1.1), epsilon(2.2))
  expect_identical(suppressWarnings(epsilon(0)), Inf)
})

test_that("compute_noise_multiplier() meets its target and equals Python's", {
  skip_if_no_core()
  noise <- compute_noise_multiplier(n = 3989, batch_size = 32,
                                    target_epsilon = 3, epochs = 20,
                                    delta = 1e-5)
  expect_identical(noise, python_core()$compute_noise_multiplier(
    3989L, 32L, 3, 20, 1e-5
  ))
  reached <- compute_epsilon(n = 3989, batch_size = 32,
                             noise_multiplier = noise, epochs = 20,
                             delta = 1e-5)
  expect_lte(reached, 3)
  expect_gt(reached, 2.9)
})

test_that("a Python ValueError reaches R as an error with its message", {
  skip_if_no_core()
  error <- expect_error(
    compute_noise_multiplier(n = 100, batch_size = 100, target_epsilon = 1e-9,
                             epochs = 1000, delta = 1e-5),
    class = "pydpr_python_error"
  )
  expect_match(conditionMessage(error),
               "^ValueError: target_epsilon=1e-09 is unreachable")
  expect_identical(conditionCall(error)[[1]], as.name("compute_noise_multiplier"))
})

test_that("compute_dp_sgd_privacy() returns a named epsilon and order", {
  skip_if_no_core()
  result <- compute_dp_sgd_privacy(n = 60000, batch_size = 256,
                                   noise_multiplier = 1.1, epochs = 60,
                                   delta = 1e-5)
  expected <- python_core()$compute_dp_sgd_privacy(60000L, 256L, 1.1, 60, 1e-5)
  expect_named(result, c("epsilon", "optimal_order"))
  expect_identical(unname(result), c(expected[[1]], expected[[2]]))
})

test_that("privacy_statement() is Python's text and prints as text", {
  skip_if_no_core()
  statement <- privacy_statement(n = 3989, batch_size = 32,
                                 noise_multiplier = 1.1, epochs = 20,
                                 delta = 1e-5, max_examples_per_user = 4)
  expected <- python_core()$privacy_statement(3989L, 32L, 1.1, 20, 1e-5,
                                              max_examples_per_user = 4L)
  expect_s3_class(statement, "pydpr_privacy_statement")
  expect_identical(unclass(statement), expected)
  printed <- paste(capture.output(print(statement)), collapse = "\n")
  expect_identical(printed, sub("\n$", "", expected))
})

test_that("accounting in a fresh R session does not load TensorFlow", {
  skip_if_no_core()
  code <- paste(
    "library(pydpr)",
    "e <- compute_epsilon(n = 3989, batch_size = 32, noise_multiplier = 1.1,",
    "                     epochs = 20, delta = 1e-5)",
    "modules <- names(reticulate::import('sys', convert = TRUE)$modules)",
    "cat(sprintf('%.17g', e), 'tensorflow' %in% modules, 'keras' %in% modules)",
    sep = "\n"
  )
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script))
  writeLines(code, script)
  output <- system2(
    file.path(R.home("bin"), "Rscript"), c("--vanilla", shQuote(script)),
    stdout = TRUE, stderr = FALSE,
    env = c(paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)),
            paste0("RETICULATE_PYTHON=", reticulate::py_exe()))
  )
  fields <- strsplit(utils::tail(output, 1L), " ")[[1]]
  expect_identical(as.numeric(fields[[1]]),
                   compute_epsilon(n = 3989, batch_size = 32,
                                   noise_multiplier = 1.1, epochs = 20,
                                   delta = 1e-5))
  expect_identical(fields[2:3], c("FALSE", "FALSE"))
})

test_that("privacy_statement(unit = \"user\") is Python's per-wearer statement", {
  expect_error(privacy_statement(n = 1000, batch_size = 64,
                                 noise_multiplier = 1.2, epochs = 20,
                                 delta = 1e-6, unit = "wearer"),
               "`unit` must be one of")
  skip_if_no_core()
  statement <- privacy_statement(n = 1000, batch_size = 64,
                                 noise_multiplier = 1.2, epochs = 20,
                                 delta = 1e-6, max_examples_per_user = 32,
                                 unit = "user")
  accounting <- reticulate::import("pydp_r.accounting")
  expect_identical(
    as.character(statement),
    accounting$privacy_statement(1000L, 64L, 1.2, 20, 1e-6,
                                 max_examples_per_user = 32L, unit = "user")
  )
  expect_match(statement, "Per user (per wearer)", fixed = TRUE)
})
