test_that("as_numpy_array() keeps shape, order and values of R data", {
  skip_if_no_core()
  x <- array(seq_len(24) / 4, dim = c(2, 3, 4))
  array <- as_numpy_array(x)
  expect_identical(unlist(reticulate::import_builtins()$list(array$shape)),
                   c(2L, 3L, 4L))
  # Element [i, j, k] in R is [i - 1, j - 1, k - 1] in NumPy.
  expect_identical(reticulate::py_to_r(array$item(reticulate::tuple(1L, 2L, 3L))),
                   x[2, 3, 4])
  expect_identical(reticulate::py_to_r(array$dtype$name), "float64")
  expect_identical(as_r_array(array), x)

  single <- as_numpy_array(c(a = 2.5), dtype = "float32")
  expect_identical(reticulate::py_to_r(single$dtype$name), "float32")
  expect_identical(as_r_array(single), array(2.5, dim = 1L))
})

test_that("as_r_array() round-trips integers, logicals, strings and empty arrays", {
  skip_if_no_core()
  m <- matrix(c(-3L, 0L, 7L, 2147483647L), nrow = 2)
  expect_identical(as_r_array(as_numpy_array(m)), m)
  flags <- c(TRUE, FALSE, TRUE)
  expect_identical(as_r_array(as_numpy_array(flags)), array(flags, dim = 3L))
  words <- c("BVP", "EDA")
  expect_identical(as_r_array(as_numpy_array(words)), array(words, dim = 2L))
  expect_identical(as_r_array(as_numpy_array(numeric(0))), array(numeric(0), dim = 0L))
  numpy <- reticulate::import("numpy", convert = FALSE)
  big <- numpy$array(list(3e9, 1), dtype = "int64")
  expect_identical(as_r_array(big), array(c(3e9, 1), dim = 2L))
  expect_identical(as_r_array(numpy$float64(1.25)), 1.25)
})

test_that("as_r_array() reads TensorFlow tensors", {
  skip_if_no_core()
  tf <- reticulate::import("tensorflow")
  tensor <- tf$reshape(tf$range(6L), list(2L, 3L))
  expect_identical(as_r_array(tensor), matrix(0:5, nrow = 2, byrow = TRUE))
})

test_that("converters reject what they cannot convert, naming the argument", {
  expect_error(as_numpy_array(list(1, 2)), "`x` must be an R vector, matrix or array")
  expect_error(as_numpy_array(NULL), "`x`")
  expect_error(as_numpy_array(1, dtype = 32), "`dtype`")
  expect_error(as_r_array(matrix(1)), "`x` must be a Python array or tensor")
})

test_that("nested structures cross both ways: dicts, empty dicts, arrays, scalars", {
  skip_if_no_core()
  value <- list(
    signal = list(wrist = list(BVP = matrix(c(0.5, 1.5, 2.5), ncol = 1)),
                  chest = list()),
    label = array(c(70, 71.5), dim = 2L),
    subject = "S9",
    weight = 71.5,
    tags = list("a", 1L)
  )
  python <- pydpr:::r_to_python(value)
  expect_s3_class(python, "python.builtin.dict")
  expect_s3_class(python$get("signal")$get("chest"), "python.builtin.dict")
  expect_s3_class(python$get("label"), "numpy.ndarray")
  back <- pydpr:::python_to_r(python)
  expect_identical(back$signal$wrist$BVP, value$signal$wrist$BVP)
  expect_identical(back$label, value$label)
  expect_identical(back$subject, "S9")
  expect_identical(back$weight, 71.5)
  expect_identical(back$tags, list("a", 1L))
  expect_length(back$signal$chest, 0L)
  expect_false(is.null(names(back$signal$chest)))
})

test_that("the Python that reticulate uses takes R arrays natively", {
  skip_if_no_core()
  # Fails where reticulate cannot read the installed NumPy (reticulate < 1.38.0
  # with NumPy 2): install_pydpr() and the Makefile's virtualenv pin numpy<2.
  expect_true(pydpr:::numpy_converts_natively(),
              label = paste("reticulate", utils::packageVersion("reticulate"),
                            "converts R arrays to this NumPy"))
  x <- array(seq_len(24) / 4, dim = c(2, 3, 4))
  array <- reticulate::r_to_py(x)
  expect_s3_class(array, "numpy.ndarray")
  expect_identical(reticulate::py_to_r(array$item(reticulate::tuple(1L, 2L, 3L))),
                   x[2, 3, 4])
})

test_that("model$fit() and model$predict() take plain R matrices with a DP optimizer", {
  skip_if_no_core()
  data <- regression_data(n = 128)
  model <- linear_model()
  model$compile(optimizer = optimizer_dp_adam(l2_norm_clip = 1,
                                              noise_multiplier = 0.5,
                                              learning_rate = 0.05),
                loss = "mse")
  history <- model$fit(data$x, data$y, batch_size = 32L, epochs = 2L,
                       verbose = 0L)
  expect_length(history$history$loss, 2L)
  predictions <- model$predict(data$x, verbose = 0L)
  expect_true(is.matrix(predictions))
  expect_identical(dim(predictions), c(128L, 1L))
  expect_true(all(is.finite(predictions)))
})

test_that("a 3-D R array trains a 1-D convnet", {
  skip_if_no_core()
  set.seed(4)
  x <- array(rnorm(64 * 12 * 6), dim = c(64, 12, 6))
  y <- matrix(rnorm(64), ncol = 1)
  keras <- reticulate::import("keras")
  model <- keras$Sequential(list(
    keras$Input(shape = list(12L, 6L)),
    keras$layers$Conv1D(4L, 3L, activation = "relu"),
    keras$layers$GlobalAveragePooling1D(),
    keras$layers$Dense(1L)
  ))
  model$compile(optimizer = optimizer_dp_sgd(1, 0.5), loss = "mse")
  history <- model$fit(x, y, batch_size = 16L, epochs = 1L, verbose = 0L)
  expect_true(is.finite(history$history$loss[[1]]))
  expect_identical(dim(model$predict(x, verbose = 0L)), c(64L, 1L))
})

test_that("numpy<2 is the constraint exactly for a reticulate before 1.38.0", {
  expect_identical(pydpr:::numpy_constraint("1.28"), "numpy<2")
  expect_identical(pydpr:::numpy_constraint("1.37.9"), "numpy<2")
  expect_identical(pydpr:::numpy_constraint("1.38.0"), character())
  expect_identical(pydpr:::numpy_constraint("1.43.0"), character())
  expect_match(pydpr:::numpy_mismatch_message("1.28", "2.4.6"),
               "reticulate 1.28 cannot convert R matrices and arrays to NumPy 2.4.6")
})

test_that("Python's fix hints read as R code", {
  hint <- paste(
    "Replace them with `model = pydp_r.replace_batch_norm(model)`",
    "(LayerNormalization with replacement='layer'), or trainable=False."
  )
  expect_identical(
    pydpr:::python_hints_in_r(hint),
    paste(
      "Replace them with `model <- replace_batch_norm(model)`",
      "(LayerNormalization with replacement = \"layer\"), or trainable = FALSE."
    )
  )
  expect_identical(pydpr:::python_hints_in_r("use pydp_r.data.poisson_batches(data, 0.1)"),
                   "use poisson_batches(data, 0.1)")
  expect_identical(pydpr:::python_hints_in_r("pydp_r.data.sampling.poisson_batches(d)"),
                   "poisson_batches(d)")
})
