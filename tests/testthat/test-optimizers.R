constructors <- list(
  DPAdam = optimizer_dp_adam,
  DPSGD = optimizer_dp_sgd,
  DPAdagrad = optimizer_dp_adagrad,
  DPRMSprop = optimizer_dp_rmsprop
)

test_that("bad DP arguments fail in R, naming the argument", {
  for (constructor in constructors) {
    expect_error(constructor(l2_norm_clip = 0, noise_multiplier = 1),
                 "`l2_norm_clip` must be a number > 0; received 0.", fixed = TRUE)
    expect_error(constructor(l2_norm_clip = "1", noise_multiplier = 1),
                 "`l2_norm_clip`", class = "pydpr_argument_error")
    expect_error(constructor(l2_norm_clip = 1, noise_multiplier = -0.1),
                 "`noise_multiplier` must be a number in [0, 10000]", fixed = TRUE)
    expect_error(constructor(l2_norm_clip = 1, noise_multiplier = 1e5),
                 "`noise_multiplier` must be a number in [0, 10000]; received 1e+05.",
                 fixed = TRUE)
    expect_error(constructor(l2_norm_clip = 1, noise_multiplier = c(1, 2)),
                 "`noise_multiplier`")
    expect_error(constructor(1, 1, num_microbatches = 1.5),
                 "`num_microbatches` must be a whole number >= 1 or NULL",
                 fixed = TRUE)
    expect_error(constructor(1, 1, learning_rate = -1), "`learning_rate`")
    expect_error(constructor(1, 1, clipnorm = 0), "`clipnorm`")
    expect_error(constructor(1, 1, use_ema = "yes"), "`use_ema`")
    expect_error(constructor(1, 1, ema_overwrite_frequency = 0.5),
                 "`ema_overwrite_frequency`")
    expect_error(constructor(1, 1, name = 3), "`name`")
    expect_error(constructor(1, 1, gradient_accumulation_steps = 0),
                 "`gradient_accumulation_steps`")
  }
  expect_error(optimizer_dp_adam(1, 1, beta_1 = 1.5), "`beta_1`")
  expect_error(optimizer_dp_adam(1, 1, amsgrad = NA), "`amsgrad`")
  expect_error(optimizer_dp_sgd(1, 1, momentum = 2), "`momentum`")
  expect_error(optimizer_dp_sgd(1, 1, nesterov = 1), "`nesterov`")
  expect_error(optimizer_dp_adagrad(1, 1, initial_accumulator_value = -1),
               "`initial_accumulator_value`")
  expect_error(optimizer_dp_rmsprop(1, 1, rho = -0.5), "`rho`")
  expect_error(optimizer_dp_rmsprop(1, 1, centered = "no"), "`centered`")
})

test_that("each constructor makes its Python DP class with the DP settings", {
  skip_if_no_core()
  core <- python_core()
  for (class_name in names(constructors)) {
    optimizer <- constructors[[class_name]](l2_norm_clip = 1.5,
                                            noise_multiplier = 0.7)
    expect_true(reticulate::import_builtins()$isinstance(
      optimizer, core[[class_name]]
    ), info = class_name)
    expect_identical(optimizer$l2_norm_clip, 1.5)
    expect_identical(optimizer$noise_multiplier, 0.7)
    expect_null(optimizer$num_microbatches)
  }
})

test_that("whole-number arguments reach Python as integers", {
  skip_if_no_core()
  optimizer <- optimizer_dp_adam(1, 1.1, num_microbatches = 32,
                                 gradient_accumulation_steps = 2,
                                 use_ema = TRUE, ema_overwrite_frequency = 5)
  expect_identical(optimizer$num_microbatches, 32L)
  expect_identical(optimizer$gradient_accumulation_steps, 2L)
  expect_identical(optimizer$ema_overwrite_frequency, 5L)
})

test_that("only supplied arguments are forwarded; Python's defaults apply to the rest", {
  skip_if_no_core()
  defaults <- optimizer_dp_adam(1, 1)
  expected <- python_core()$DPAdam(l2_norm_clip = 1, noise_multiplier = 1)
  expect_match(defaults$name, "^dp_adam")  # Python's automatic name
  config <- defaults$get_config()
  expected_config <- expected$get_config()
  for (key in c("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad",
                "weight_decay", "clipnorm", "use_ema", "ema_momentum",
                "gradient_accumulation_steps")) {
    expect_identical(config[[key]], expected_config[[key]], info = key)
  }

  custom <- optimizer_dp_sgd(1, 1, learning_rate = 0.05, momentum = 0.9,
                             nesterov = TRUE, name = "private_sgd")
  config <- custom$get_config()
  expect_equal(config$learning_rate, 0.05, tolerance = 1e-6)
  expect_equal(config$momentum, 0.9)
  expect_true(config$nesterov)
  expect_identical(config$name, "private_sgd")

  rmsprop <- optimizer_dp_rmsprop(1, 1, rho = 0.8, centered = TRUE)
  expect_equal(rmsprop$get_config()$rho, 0.8)
  expect_true(rmsprop$get_config()$centered)
  adagrad <- optimizer_dp_adagrad(1, 1, initial_accumulator_value = 0.5)
  expect_equal(adagrad$get_config()$initial_accumulator_value, 0.5)
})

test_that("`...` goes to Python as keyword arguments, and Python's error comes back", {
  skip_if_no_core()
  error <- expect_error(optimizer_dp_adam(1, 1, not_an_argument = 3),
                        class = "pydpr_python_error")
  expect_match(conditionMessage(error), "not_an_argument")
  expect_match(conditionMessage(error), "^ValueError")
})

test_that("Python's own range checks surface as R errors with their message", {
  skip_if_no_core()
  # Keras allows only one of the clipping options; R does not check that.
  error <- expect_error(optimizer_dp_adam(1, 1, clipnorm = 1, clipvalue = 1),
                        class = "pydpr_python_error")
  expect_match(conditionMessage(error), "clipnorm")
})

test_that("a model trained in R with optimizer_dp_adam() lowers its loss", {
  skip_if_no_core()
  data <- regression_data(n = 256)
  x <- data$x  # plain R matrices, no conversion
  y <- data$y
  model <- linear_model()
  model$compile(
    optimizer = optimizer_dp_adam(l2_norm_clip = 1, noise_multiplier = 0.5,
                                  learning_rate = 0.05),
    loss = "mse"
  )
  loss_before <- model$evaluate(x, y, verbose = 0L)
  history <- model$fit(x, y, batch_size = 32L, epochs = 8L, verbose = 0L)
  loss_after <- model$evaluate(x, y, verbose = 0L)
  expect_length(history$history$loss, 8L)
  expect_lt(loss_after, 0.25 * loss_before)
})

test_that("every DP optimizer trains a compiled model for an epoch", {
  skip_if_no_core()
  data <- regression_data(n = 64)
  for (class_name in names(constructors)) {
    model <- linear_model()
    model$compile(optimizer = constructors[[class_name]](1, 0.5), loss = "mse")
    history <- model$fit(data$x, data$y, batch_size = 16L,
                         epochs = 1L, verbose = 0L)
    expect_true(is.finite(history$history$loss[[1]]), info = class_name)
  }
})
