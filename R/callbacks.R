#' Callback that logs the epsilon spent, and can stop at a budget
#'
#' At the end of each epoch sets `logs$epsilon` to the epsilon of the noisy
#' steps that really ran (over every `fit()` of the model's DP optimizer), so it
#' shows in the progress bar and in the training history. The noise multiplier,
#' microbatching and gradient accumulation are read from the model's DP
#' optimizer (see [optimizer_dp_adam()]), and the sampling from what `fit()`
#' is given: batches from [poisson_batches()] get the epsilon of Poisson
#' sampling; any other input (arrays, shuffled batches) gets the much larger
#' bound that holds without amplification by sampling, with a warning. With
#' `target_epsilon`, training stops before a step would exceed it.
#'
#' Only the arguments you give are passed to the Python class
#' `pydp_r.PrivacyBudget`, so its own defaults and checks apply to the rest.
#'
#' @param n `NULL` (default: measured from what `fit()` trains on) or the
#'   declared number of training examples, a whole number >= 1; a warning when
#'   it differs from what ran.
#' @param batch_size `NULL` (default: measured) or the declared batch size, a
#'   whole number >= 1, checked the same way.
#' @param delta Target delta, a number in (0, 1). Defaults to `1e-5`.
#' @param target_epsilon `NULL` (default: never stop) or an epsilon budget, a
#'   number > 0.
#' @param accountant `"rdp"` (default) or `"pld"`, in any case, as in
#'   [compute_epsilon()].
#' @param ... Further named arguments for `pydp_r.PrivacyBudget`, such as
#'   `ledger_path` (a file that keeps the ledger of steps taken).
#'
#' @return A Python Keras callback object (`pydp_r.PrivacyBudget`) for the
#'   `callbacks` list of `fit()`.
#' @export
#' @examplesIf pydp_r_available()
#' budget <- callback_privacy_budget(delta = 1e-5, target_epsilon = 3)
#' # model$fit(poisson_batches(...), epochs = 20L, callbacks = list(budget))
callback_privacy_budget <- function(n = NULL, batch_size = NULL, delta = 1e-5,
                                    target_epsilon = NULL, accountant = "rdp",
                                    ...) {
  check_accounting_number(n, "n", null_ok = TRUE)
  check_accounting_number(batch_size, "batch_size", null_ok = TRUE)
  if (!is.null(n) && !is.null(batch_size)) {
    check_n_and_batch_size(n, batch_size)
  }
  check_accounting_number(delta, "delta")
  check_accounting_number(target_epsilon, "target_epsilon", null_ok = TRUE)
  check_accountant(accountant)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  call_core("PrivacyBudget", args, frame_call(environment()))
}

#' Callback that averages the weights during training (free in privacy)
#'
#' Keeps an exponential moving average of the trainable weights, updated after
#' every training batch with a warm-up (De et al. 2022), validates `fit()`'s
#' validation data with the averaged weights, and leaves the model holding
#' them when training ends. With noisy DP steps the average is usually closer
#' to a good model than the last step. Averaging only combines models that DP
#' training already released, so it is post-processing: it costs no privacy.
#'
#' @param decay Largest decay of the average, a number in \[0, 1). Defaults to
#'   `0.99`; the average spans about `1 / (1 - decay)` steps, so 0.99 suits
#'   runs of a few hundred steps and 0.999 runs of thousands.
#' @param warmup Warm-up constant, a whole number >= 1. Defaults to `10`: at
#'   step t the decay is `min(decay, (1 + t) / (warmup + t))`.
#'
#' @return A Python Keras callback object (`pydp_r.ParameterAveraging`) for the
#'   `callbacks` list of `fit()`.
#' @export
#' @examplesIf pydp_r_available()
#' averaging <- callback_parameter_averaging(decay = 0.99)
#' # model$fit(poisson_batches(...), epochs = 20L, callbacks = list(averaging))
callback_parameter_averaging <- function(decay = 0.99, warmup = 10) {
  check_number(decay, "decay", min = 0, max = 1, max_open = TRUE)
  check_count(warmup, "warmup")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = "warmup")
  call_core("ParameterAveraging", args, frame_call(environment()))
}
