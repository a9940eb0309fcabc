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
