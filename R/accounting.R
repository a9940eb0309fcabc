#' Epsilon spent by DP-SGD training
#'
#' The epsilon of a DP-SGD run at a given delta: `ceiling(epochs * n /
#' batch_size)` steps of the Gaussian mechanism, each on a Poisson sample of the
#' data with rate `batch_size / n`, under add-or-remove-one-example adjacency.
#' It holds for the release of every intermediate model. Ordinary shuffled
#' batches are not Poisson samples, so for them this is an optimistic estimate;
#' [privacy_statement()] also gives the bound that holds for them.
#'
#' @param n Number of training examples, a whole number >= 1 (no default).
#' @param batch_size Expected examples per step, a whole number in \[1, `n`\]
#'   (no default). With gradient accumulation pass the logical batch size.
#' @param noise_multiplier Noise standard deviation over the clipping bound, a
#'   number in \[0, 1e4\] (no default). 0 means no noise and gives `Inf`.
#' @param epochs Passes over the data, a number > 0, may be fractional (no
#'   default).
#' @param delta Target delta, a number in (0, 1) (no default); usually below
#'   `1 / n`.
#' @param accountant `"rdp"` (default; Renyi DP accountant of dp-accounting) or
#'   `"pld"` (privacy loss distributions: tighter, slower), in any case.
#' @param used_microbatching Whether gradients were clipped per microbatch of
#'   more than one example (`num_microbatches` smaller than the batch size),
#'   which doubles the sensitivity. Defaults to `FALSE`.
#'
#' @return Epsilon, a number >= 0 (`Inf` when `noise_multiplier` is 0; 0 where
#'   the accountant proves (0, `delta`)-DP, as for very noisy or very short
#'   runs). An error when the run takes more than 1e7 steps
#'   (`epochs * n / batch_size`), which names the batch size that fits.
#' @seealso [compute_noise_multiplier()] for the inverse question,
#'   [callback_privacy_budget()] to log epsilon during training.
#' @export
#' @examplesIf pydp_r_available()
#' # The walkthrough's DP run: 3,989 training sequences, batches of 32.
#' compute_epsilon(n = 3989, batch_size = 32, noise_multiplier = 1.1,
#'                 epochs = 20, delta = 1e-5)
compute_epsilon <- function(n, batch_size, noise_multiplier, epochs, delta,
                            accountant = "rdp", used_microbatching = FALSE) {
  check_n_and_batch_size(n, batch_size)
  check_noise_multiplier(noise_multiplier)
  check_epochs_and_delta(epochs, delta)
  check_accountant(accountant)
  check_flag(used_microbatching, "used_microbatching")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  call_core("compute_epsilon", args, frame_call(environment()),
            submodule = "accounting")
}

#' Noise multiplier for a target epsilon
#'
#' The smallest noise multiplier whose [compute_epsilon()] is at most
#' `target_epsilon` (to a relative precision of 1e-4, always on the safe side).
#'
#' @inheritParams compute_epsilon
#' @param target_epsilon Epsilon budget, a number > 0 (no default).
#' @param used_microbatching Whether gradients will be clipped per microbatch of
#'   more than one example; the returned multiplier then accounts for the
#'   doubled sensitivity. Defaults to `FALSE`.
#'
#' @return The noise multiplier, a number in (0, 1e4]. An error (from Python)
#'   when `target_epsilon` is below the epsilon of a multiplier of 1e4 (the
#'   largest accounted), naming that floor and what to change (more examples,
#'   fewer epochs, a smaller batch size or a larger delta).
#' @export
#' @examplesIf pydp_r_available()
#' compute_noise_multiplier(n = 3989, batch_size = 32, target_epsilon = 3,
#'                          epochs = 20, delta = 1e-5)
compute_noise_multiplier <- function(n, batch_size, target_epsilon, epochs,
                                     delta, accountant = "rdp",
                                     used_microbatching = FALSE) {
  check_n_and_batch_size(n, batch_size)
  check_accounting_number(target_epsilon, "target_epsilon")
  check_epochs_and_delta(epochs, delta)
  check_accountant(accountant)
  check_flag(used_microbatching, "used_microbatching")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  call_core("compute_noise_multiplier", args, frame_call(environment()),
            submodule = "accounting")
}

#' Epsilon as TF Privacy's classic calculator computes it
#'
#' Epsilon and the optimal Renyi order as TensorFlow Privacy's
#' `compute_dp_sgd_privacy` (the calculator the R walkthrough calls) computes
#' them: RDP accountant over TF Privacy's orders, sampling rate
#' `batch_size / n`, no microbatching correction. Kept to compare with published
#' figures; prefer [compute_epsilon()] or [privacy_statement()], which state
#' their assumptions.
#'
#' @inheritParams compute_epsilon
#' @param noise_multiplier Noise standard deviation over the clipping bound, a
#'   number in \[0, 1e4\] (no default); 0 gives `Inf` and an order of `NaN`.
#'
#' @return A named numeric vector `c(epsilon = , optimal_order = )`.
#' @export
#' @examplesIf pydp_r_available()
#' compute_dp_sgd_privacy(n = 60000, batch_size = 256, noise_multiplier = 1.1,
#'                        epochs = 60, delta = 1e-5)
compute_dp_sgd_privacy <- function(n, batch_size, noise_multiplier, epochs,
                                   delta) {
  check_n_and_batch_size(n, batch_size)
  check_noise_multiplier(noise_multiplier)
  check_epochs_and_delta(epochs, delta)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = accounting_integer_args)
  result <- call_core("compute_dp_sgd_privacy", args,
                      frame_call(environment()), submodule = "accounting")
  c(epsilon = result[[1]], optimal_order = result[[2]])
}

#' Plain-text statement of a training run's privacy guarantee
#'
#' A report of the DP guarantee of a DP-SGD run and what it rests on, in the
#' spirit of TF Privacy's `compute_dp_sgd_privacy_statement`: example-level
#' epsilon under Poisson sampling and under one use of each example per epoch,
#' each with the RDP and the PLD accountant, the assumptions behind every
#' number, and, given `max_examples_per_user`, a user-level epsilon by group
#' privacy.
#'
#' @inheritParams compute_epsilon
#' @param used_microbatching Whether gradients were clipped per microbatch of
#'   more than one example (sensitivity doubled). Defaults to `FALSE`.
#' @param max_examples_per_user `NULL` (default: no user-level guarantee) or
#'   the largest number of examples one person (or one unit of data you want
#'   protected, such as one 2-s window that sits in up to 12 overlapping
#'   sequences) contributes, a whole number >= 1. The statement then adds the
#'   epsilon for that group by group privacy. With `unit = "user"`, the
#'   examples each user brings to a step (stated only).
#' @param unit `"example"` (default): `n` counts examples and the guarantee is
#'   per example, with a per-user bound by group privacy when
#'   `max_examples_per_user` is given. `"user"`: user-level DP-SGD
#'   ([poisson_batches()] with `user_ids`): `n` counts users (wearers),
#'   `batch_size` the expected users per step, and every epsilon is per wearer,
#'   with no group privacy.
#'
#' @return The statement, a string of lines of at most 80 characters, with
#'   class `pydpr_privacy_statement` so that it prints as text.
#' @export
#' @examplesIf pydp_r_available()
#' privacy_statement(n = 3989, batch_size = 32, noise_multiplier = 1.1,
#'                   epochs = 20, delta = 1e-5)
#' # Per wearer: 1,000 wearers, 64 expected per step, 32 examples each.
#' privacy_statement(n = 1000, batch_size = 64, noise_multiplier = 1.2,
#'                   epochs = 20, delta = 1e-6, max_examples_per_user = 32,
#'                   unit = "user")
privacy_statement <- function(n, batch_size, noise_multiplier, epochs, delta,
                              used_microbatching = FALSE,
                              max_examples_per_user = NULL, unit = "example") {
  check_n_and_batch_size(n, batch_size)
  check_noise_multiplier(noise_multiplier)
  check_epochs_and_delta(epochs, delta)
  check_flag(used_microbatching, "used_microbatching")
  check_accounting_number(max_examples_per_user, "max_examples_per_user",
                          null_ok = TRUE)
  check_choice(unit, "unit", c("example", "user"))
  args <- supplied_args(
    match.call(expand.dots = FALSE), environment(),
    integers = c(accounting_integer_args, "max_examples_per_user")
  )
  statement <- call_core("privacy_statement", args, frame_call(environment()),
                         submodule = "accounting")
  structure(statement, class = "pydpr_privacy_statement")
}

#' @export
print.pydpr_privacy_statement <- function(x, ...) {
  cat(x)
  invisible(x)
}

accounting_integer_args <- c("n", "batch_size")

check_n_and_batch_size <- function(n, batch_size,
                                   call = frame_call(parent.frame())) {
  check_accounting_number(n, "n", call = call)
  check_accounting_number(batch_size, "batch_size", call = call)
  if (batch_size > n) {
    argument_error("batch_size", sprintf("a whole number in [1, n] = [1, %s]",
                                         format(n, scientific = FALSE)),
                   batch_size, call)
  }
}

check_noise_multiplier <- function(noise_multiplier,
                                   call = frame_call(parent.frame())) {
  check_accounting_number(noise_multiplier, "noise_multiplier", call = call)
}

check_epochs_and_delta <- function(epochs, delta,
                                   call = frame_call(parent.frame())) {
  check_accounting_number(epochs, "epochs", call = call)
  check_accounting_number(delta, "delta", call = call)
}
