conv_model_with_batch_norm <- function() {
  keras <- reticulate::import("keras")
  keras$Sequential(list(
    keras$Input(shape = list(12L, 6L)),
    keras$layers$Conv1D(32L, 3L, activation = "relu"),
    keras$layers$BatchNormalization(name = "norm"),
    keras$layers$GlobalAveragePooling1D(),
    keras$layers$Dense(1L)
  ))
}

layer_class <- function(layer) {
  reticulate::import_builtins()$type(layer)$`__name__`
}

test_that("bad arguments fail in R, naming the argument", {
  expect_error(replace_batch_norm("model"), "`model` must be a Keras model")
  expect_error(replace_batch_norm(list()), "`model`")
  fake_model <- structure(list(), class = "python.builtin.object")
  expect_error(replace_batch_norm(fake_model, replacement = "instance"),
               "`replacement` must be one of \"group\", \"layer\"", fixed = TRUE)
  expect_error(replace_batch_norm(fake_model, max_groups = 0), "`max_groups`")
  expect_error(replace_batch_norm(fake_model, max_groups = 2.5), "`max_groups`")
})

test_that("BatchNormalization becomes GroupNormalization, model unchanged", {
  skip_if_no_core()
  model <- conv_model_with_batch_norm()
  # max_groups = 8 is an R double; Python insists on an int.
  replaced <- replace_batch_norm(model, max_groups = 8)
  new_layer <- replaced$get_layer("norm")
  expect_identical(layer_class(new_layer), "GroupNormalization")
  expect_identical(new_layer$groups, 8L)
  expect_identical(layer_class(model$get_layer("norm")), "BatchNormalization")
  expect_identical(
    as_r_array(replaced$layers[[1]]$kernel),
    as_r_array(model$layers[[1]]$kernel)
  )
})

test_that("replacement = \"layer\" gives LayerNormalization", {
  skip_if_no_core()
  replaced <- replace_batch_norm(conv_model_with_batch_norm(),
                                 replacement = "layer")
  expect_identical(layer_class(replaced$get_layer("norm")), "LayerNormalization")
})

test_that("a DP optimizer trains the replaced model", {
  skip_if_no_core()
  set.seed(3)
  x <- array(rnorm(32 * 12 * 6), dim = c(32, 12, 6))
  y <- matrix(rnorm(32), ncol = 1)
  model <- replace_batch_norm(conv_model_with_batch_norm())
  model$compile(optimizer = optimizer_dp_adam(1, 0.5), loss = "mse")
  history <- model$fit(x, y, batch_size = 16L, epochs = 1L,
                       verbose = 0L)
  expect_true(is.finite(history$history$loss[[1]]))
})

test_that("a DP fit() of a model with batch norm names the fix in R syntax", {
  skip_if_no_core()
  set.seed(5)
  x <- array(rnorm(16 * 12 * 6), dim = c(16, 12, 6))
  y <- matrix(rnorm(16), ncol = 1)
  model <- conv_model_with_batch_norm()
  model$compile(optimizer = optimizer_dp_adam(1, 0.5), loss = "mse")
  # Raised inside Keras' fit(), which pydpr does not wrap: the core itself
  # writes the hint for R when it runs under reticulate.
  error <- expect_error(model$fit(x, y, batch_size = 8L, epochs = 1L, verbose = 0L))
  message <- conditionMessage(error)
  expect_match(message, "`model <- replace_batch_norm(model)`", fixed = TRUE)
  expect_no_match(message, "pydp_r.replace_batch_norm", fixed = TRUE)
})
