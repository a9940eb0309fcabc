#' Callback that logs the epsilon spent, and can stop at a budget
#'
#' At the end of each epoch sets `logs$epsilon` to [compute_epsilon()] for the
#' epochs completed so far (counting earlier `fit()` calls with the same
#' callback), so it shows in the progress bar and in the training history. The
#' noise multiplier, microbatching and gradient accumulation are read from the
#' model's DP optimizer (see [optimizer_dp_adam()]). With `target_epsilon`,
#' training stops before an epoch would exceed it.
#'
#' The accounting assumes Poisson sampling of rate `batch_size / n`; shuffled
#' batches make the logged epsilon an optimistic estimate (see
#' [privacy_statement()]).
#'
#' @param n Number of training examples, a whole number >= 1 (no default).
#' @param batch_size Examples per batch given to `fit()`, a whole number in
#'   \[1, `n`\] (no default).
#' @param delta Target delta, a number in (0, 1) (no default).
#' @param target_epsilon `NULL` (default: never stop) or an epsilon budget, a
#'   number > 0.
#' @param accountant `"rdp"` (default) or `"pld"`.
#'
#' @return A Python Keras callback object (`pydp_r.PrivacyBudget`) for the
#'   `callbacks` list of `fit()`.
#' @export
#' @examplesIf pydp_r_available()
#' budget <- callback_privacy_budget(n = 3989, batch_size = 32, delta = 1e-5,
#'                                   target_epsilon = 3)
#' # model$fit(x, y, batch_size = 32L, epochs = 20L, callbacks = list(budget))
callback_privacy_budget <- function(n, batch_size, delta,
                                    target_epsilon = NULL, accountant = "rdp") {
  check_n_and_batch_size(n, batch_size)
  check_number(delta, "delta", min = 0, max = 1, min_open = TRUE,
               max_open = TRUE)
  check_number(target_epsilon, "target_epsilon", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, null_ok = TRUE)
  check_choice(accountant, "accountant", c("rdp", "pld"))
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  call_core("PrivacyBudget", args, frame_call(environment()))
}
