test_that("bad planner arguments fail in R, naming the argument", {
  plan <- function(...) {
    args <- utils::modifyList(
      list(n = 3378, target_epsilon = 2, epochs = 20, delta = 1e-5),
      list(...)
    )
    do.call(plan_dp_training, args)
  }
  expect_error(plan(n = 0), "`n` must be a whole number >= 1; received 0.",
               fixed = TRUE)
  expect_error(plan(target_epsilon = 0), "`target_epsilon` must be a number > 0")
  expect_error(plan(epochs = -1), "`epochs`")
  expect_error(plan(delta = 1), "`delta`")
  expect_error(plan(batch_sizes = c(64, 5000)),
               "`batch_sizes` must be NULL or whole numbers in [1, n] = [1, 3378]",
               fixed = TRUE)
  expect_error(plan(batch_sizes = 2.5), "`batch_sizes`")
  expect_error(plan(min_steps = 0), "`min_steps`")
  expect_error(plan(accountant = "gdp"), "`accountant` must be one of")
})

test_that("plan_dp_training returns the Python planner's choice", {
  skip_if_no_core()
  plan <- plan_dp_training(n = 3378, target_epsilon = 2, epochs = 20,
                           delta = 1e-5, batch_sizes = c(64, 256, 1024))
  expect_s3_class(plan, "pydpr_dp_plan")
  # Steps are 1056, 264, 66: 256 is the largest batch keeping 150 steps.
  expect_equal(plan$batch_size, 256L)
  expect_equal(plan$steps, 264L)
  expect_equal(plan$candidates$batch_size, c(64L, 256L, 1024L))
  expect_equal(plan$noise_multiplier,
               compute_noise_multiplier(n = 3378, batch_size = 256,
                                        target_epsilon = 2, epochs = 20,
                                        delta = 1e-5))
  expect_equal(plan$noise_to_signal, plan$noise_multiplier / 256)
  expect_lte(max(plan$candidates$epsilon), 2)
  expect_equal(plan$sampling_rate, 256 / 3378)
  expect_output(print(plan), "noise-to-signal", fixed = TRUE)
  fewer <- plan_dp_training(n = 3378, target_epsilon = 2, epochs = 20,
                            delta = 1e-5, batch_sizes = c(64, 256, 1024),
                            min_steps = 50)
  expect_equal(fewer$batch_size, 1024L)
})

test_that("per-wearer plans answer each question as the Python planner does", {
  expect_error(plan_dp_training(n = 1000, target_epsilon = 1, epochs = 20,
                                delta = 1e-6, unit = "wearer"),
               "`unit` must be one of \"example\", \"user\"", fixed = TRUE)
  expect_error(plan_dp_training(target_epsilon = 1, epochs = 20, delta = 1e-6),
               "`n` must be a whole number >= 1; received NULL.", fixed = TRUE)
  expect_error(plan_dp_training(target_epsilon = 1, epochs = 20, delta = 1e-6,
                                unit = "user", max_examples_per_user = 32,
                                noise_to_signal = 0),
               "`noise_to_signal` must be a number > 0 or NULL", fixed = TRUE)
  skip_if_no_core()
  planner <- reticulate::import("pydp_r.planner")
  wearers <- plan_dp_training(target_epsilon = 1, epochs = 20, delta = 1e-6,
                              unit = "user", max_examples_per_user = 32,
                              noise_to_signal = 0.05)
  expected <- planner$plan_dp_training(
    NULL, 1, 20, 1e-6, unit = "user", max_examples_per_user = 32L,
    noise_to_signal = 0.05
  )
  expect_s3_class(wearers, "pydpr_user_level_plan")
  expect_identical(wearers$solved_for, "n_users")
  expect_identical(wearers$routes$route, c("user", "example"))
  expect_identical(wearers$routes$n_users[[1]],
                   as.integer(expected$user_level$n_users))
  expect_identical(wearers$better, expected$better)
  expect_equal(wearers$advantage,
               wearers$routes$n_users[[2]] / wearers$routes$n_users[[1]])
  expect_identical(wearers$text, reticulate::py_str(expected))
  epsilon <- plan_dp_training(n = 1000, epochs = 20, delta = 1e-6,
                              batch_sizes = c(64, 128), unit = "user",
                              max_examples_per_user = 32,
                              noise_to_signal = 0.05)
  expect_identical(epsilon$solved_for, "epsilon")
  expect_equal(epsilon$routes$user_epsilon[[1]],
               compute_epsilon(n = 1000, batch_size = 128,
                               noise_multiplier = 0.05 * 128, epochs = 20,
                               delta = 1e-6))
  expect_output(print(epsilon), "Better:", fixed = TRUE)
  expect_error(plan_dp_training(n = 1000, epochs = 20, delta = 1e-6,
                                unit = "user", max_examples_per_user = 32),
               "give exactly two of n")
})
