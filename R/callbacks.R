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
#' @param accountant `"rdp"` (default) or `"pld"`.
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
  check_count(n, "n", null_ok = TRUE)
  check_count(batch_size, "batch_size", null_ok = TRUE)
  if (!is.null(n) && !is.null(batch_size)) {
    check_n_and_batch_size(n, batch_size)
  }
  check_number(delta, "delta", min = 0, max = 1, min_open = TRUE,
               max_open = TRUE)
  check_number(target_epsilon, "target_epsilon", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, null_ok = TRUE)
  check_choice(accountant, "accountant", c("rdp", "pld"))
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  call_core("PrivacyBudget", args, frame_call(environment()))
}
