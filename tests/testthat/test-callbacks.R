test_that("bad callback arguments fail in R, naming the argument", {
  expect_error(callback_privacy_budget(n = 0, batch_size = 1, delta = 1e-5), "`n`")
  expect_error(callback_privacy_budget(n = 2.5), "`n` must be a whole number >= 1 or NULL",
               fixed = TRUE)
  expect_error(callback_privacy_budget(batch_size = 0), "`batch_size`")
  expect_error(callback_privacy_budget(n = 100, batch_size = 200, delta = 1e-5),
               "`batch_size`")
  expect_error(callback_privacy_budget(n = 100, batch_size = 10, delta = 2),
               "`delta`")
  expect_error(callback_privacy_budget(n = 100, batch_size = 10, delta = 1e-5,
                                       target_epsilon = -1),
               "`target_epsilon` must be a number > 0 or NULL", fixed = TRUE)
  expect_error(callback_privacy_budget(n = 100, batch_size = 10, delta = 1e-5,
                                       accountant = 1),
               "`accountant`")
})

test_that("callback_privacy_budget() checks as compute_epsilon() does, accountant in any case", {
  # The shared accounting checks: compute_epsilon()'s words for the same value.
  for (bad in list(list(n = 0), list(batch_size = 2.5), list(delta = 1),
                   list(target_epsilon = 0), list(accountant = "gdp"))) {
    name <- names(bad)
    arguments <- list(n = 100, batch_size = 10, noise_multiplier = 1, epochs = 1,
                      delta = 1e-5, target_epsilon = 1, accountant = "rdp")
    arguments[[name]] <- bad[[1]]
    from_callback <- tryCatch(
      do.call(callback_privacy_budget, arguments[c("n", "batch_size", "delta",
                                                   "target_epsilon", "accountant")]),
      pydpr_argument_error = conditionMessage
    )
    reference <- if (name == "target_epsilon") "compute_noise_multiplier" else "compute_epsilon"
    used <- setdiff(names(formals(reference)), "used_microbatching")
    from_accounting <- tryCatch(do.call(reference, arguments[used]),
                                pydpr_argument_error = conditionMessage)
    # The callback's n, batch_size and target_epsilon may also be NULL, and say so.
    expect_identical(sub(" or NULL;", ";", from_callback, fixed = TRUE), from_accounting)
  }
  skip_if_no_core()
  budget <- callback_privacy_budget(delta = 1e-5, accountant = "PLD")
  expect_identical(budget$accountant, "pld")
})

test_that("callback_privacy_budget() makes pydp_r.PrivacyBudget with integer counts", {
  skip_if_no_core()
  budget <- callback_privacy_budget(n = 3989, batch_size = 32, delta = 1e-5,
                                    target_epsilon = 3)
  expect_true(reticulate::import_builtins()$isinstance(
    budget, python_core()$PrivacyBudget
  ))
  expect_identical(budget$n, 3989L)
  expect_identical(budget$batch_size, 32L)
  expect_identical(budget$target_epsilon, 3)
})

test_that("on poisson_batches() the callback logs the epsilon compute_epsilon() gives", {
  skip_if_no_core()
  data <- regression_data(n = 256)
  model <- linear_model()
  model$compile(optimizer = optimizer_dp_sgd(l2_norm_clip = 1,
                                             noise_multiplier = 1.3),
                loss = "mse")
  budget <- callback_privacy_budget(delta = 1e-5)
  # max_batch_size = n: no batch is ever truncated, so the accounting is plain
  # Poisson sampling at rate 16 / 256, what compute_epsilon() assumes.
  batches <- poisson_batches(data, sampling_rate = 16 / 256,
                             max_batch_size = 256, seed = 1)
  history <- model$fit(batches, epochs = 2L, verbose = 0L,
                       callbacks = list(budget))
  logged <- unlist(history$history$epsilon)
  expected <- vapply(1:2, function(epochs) {
    compute_epsilon(n = 256, batch_size = 16, noise_multiplier = 1.3,
                    epochs = epochs, delta = 1e-5)
  }, numeric(1))
  expect_equal(logged, expected, tolerance = 1e-6)
  expect_lt(logged[[1]], logged[[2]])
})

test_that("bad averaging arguments fail in R, naming the argument", {
  expect_error(callback_parameter_averaging(decay = 1), "`decay`")
  expect_error(callback_parameter_averaging(decay = -0.1), "`decay`")
  expect_error(callback_parameter_averaging(warmup = 0), "`warmup`")
  expect_error(callback_parameter_averaging(warmup = 1.5), "`warmup`")
})

test_that("callback_parameter_averaging() leaves the model on the averaged weights", {
  skip_if_no_core()
  data <- regression_data(n = 256)
  train <- function(decay) {
    model <- linear_model()
    model$compile(optimizer = optimizer_dp_sgd(l2_norm_clip = 1,
                                               noise_multiplier = 1.3,
                                               learning_rate = 0.1),
                  loss = "mse")
    averaging <- callback_parameter_averaging(decay = decay, warmup = 1)
    expect_true(reticulate::import_builtins()$isinstance(
      averaging, python_core()$ParameterAveraging
    ))
    expect_identical(averaging$warmup, 1L)
    model$fit(data$x, data$y, batch_size = 32L, epochs = 2L, verbose = 0L,
              callbacks = list(averaging))
    list(final = as.numeric(model$get_weights()[[1]]),
         raw = as.numeric(averaging$raw_weights[[1]]), steps = averaging$steps)
  }
  # Decay 0 averages nothing: the model keeps its last weights.
  no_average <- train(decay = 0)
  expect_equal(no_average$final, no_average$raw, tolerance = 1e-6)
  # Decay 0.9 moves the model off its last noisy iterate, to the average.
  averaged <- train(decay = 0.9)
  expect_identical(averaged$steps, 16L)
  expect_gt(max(abs(averaged$final - averaged$raw)), 1e-4)
})
