test_that("the core is bound to a delayed Python module at load", {
  expect_s3_class(pydpr:::pydp_r, "python.builtin.module")
})

test_that("pydp_r_available() is TRUE when the core imports", {
  skip_if_no_core()
  expect_true(pydp_r_available())
  expect_true(reticulate::py_has_attr(pydpr:::pydp_r, "compute_epsilon"))
})

test_that("a failed import of the core tells the user to run install_pydpr()", {
  error <- expect_error(
    pydpr:::on_core_import_error(simpleError("No module named 'pydp_r'")),
    class = "pydpr_missing_core"
  )
  expect_match(conditionMessage(error), "install_pydpr()", fixed = TRUE)
  expect_match(conditionMessage(error), "RETICULATE_PYTHON", fixed = TRUE)
  expect_match(conditionMessage(error), "No module named 'pydp_r'", fixed = TRUE)
})

test_that("the missing-core message names both ways to fix it", {
  message <- pydpr:::core_missing_message("No module named 'pydp_r'")
  expect_match(message, "No module named 'pydp_r'", fixed = TRUE)
  expect_match(message, "pydpr::install_pydpr()", fixed = TRUE)
  expect_match(message, "use_virtualenv", fixed = TRUE)
})

test_that("a Python exception becomes an R error carrying the Python message", {
  skip_if_no_core()
  int <- reticulate::import_builtins()$int
  error <- expect_error(
    pydpr:::call_python(int, list("twelve")),
    class = "pydpr_python_error"
  )
  expect_match(conditionMessage(error),
               "ValueError: invalid literal for int() with base 10: 'twelve'",
               fixed = TRUE)
  expect_false(grepl("\\s$", conditionMessage(error)))
})

test_that("errors from the wrappers report the wrapper's call", {
  error <- expect_error(compute_epsilon(n = 0, batch_size = 1,
                                        noise_multiplier = 1, epochs = 1,
                                        delta = 1e-5))
  expect_identical(conditionCall(error)[[1]], as.name("compute_epsilon"))
})
