#' Plan a DP-SGD run for a target epsilon
#'
#' Suggests a batch size, noise multiplier and number of steps for training
#' `n` examples for `epochs` epochs within `target_epsilon` at `delta`. For
#' each candidate batch size the noise multiplier is calibrated with
#' [compute_noise_multiplier()] (Poisson sampling at rate `batch_size / n`);
#' the plan is the candidate with the smallest noise-to-signal ratio among
#' those that keep at least `min_steps` steps (if none does, the one with the
#' most steps).
#'
#' The noise-to-signal ratio is `noise_multiplier / batch_size`, which is the
#' noise standard deviation over `batch_size * l2_norm_clip`: the noise in the
#' averaged clipped gradient, in units of the clipping bound. At a fixed
#' epsilon and number of epochs it falls roughly like `1 / sqrt(batch_size)`,
#' so large batches with calibrated noise give less noisy steps, but fewer of
#' them.
#'
#' @param n Number of training examples, a whole number >= 1 (no default).
#' @param target_epsilon Epsilon budget, a number > 0 (no default).
#' @param epochs Passes over the data, a number > 0, may be fractional (no
#'   default).
#' @param delta Target delta, a number in (0, 1) (no default); usually below
#'   `1 / n`.
#' @param batch_sizes Candidate batch sizes, whole numbers in \[1, `n`\].
#'   Defaults to `NULL`: powers of two from 16 up to `n / 2`.
#' @param min_steps Fewest steps a plan should keep, a whole number >= 1.
#'   Defaults to 150.
#' @param accountant `"rdp"` (default) or `"pld"`, in any case, as in
#'   [compute_epsilon()].
#'
#' @return A list of class `pydpr_dp_plan` with `batch_size`,
#'   `noise_multiplier`, `steps`, `epsilon`, `noise_to_signal` and
#'   `sampling_rate` (pass it to [poisson_batches()]) of the chosen set-up,
#'   `candidates` (a data frame, one row per batch size considered) and `text`
#'   (the table that printing shows).
#' @seealso [compute_noise_multiplier()], [poisson_batches()].
#' @export
#' @examplesIf pydp_r_available()
#' # The heart-rate demo: about 3,400 training sequences, 20 epochs.
#' plan_dp_training(n = 3378, target_epsilon = 2, epochs = 20, delta = 1e-5,
#'                  batch_sizes = c(128, 256, 512))
plan_dp_training <- function(n, target_epsilon, epochs, delta,
                             batch_sizes = NULL, min_steps = 150,
                             accountant = "rdp") {
  check_accounting_number(n, "n")
  check_accounting_number(target_epsilon, "target_epsilon")
  check_epochs_and_delta(epochs, delta)
  if (!is.null(batch_sizes)) {
    ok <- is.numeric(batch_sizes) && length(batch_sizes) >= 1L &&
      !anyNA(batch_sizes) && all(batch_sizes == trunc(batch_sizes)) &&
      all(batch_sizes >= 1) && all(batch_sizes <= n)
    if (!ok) {
      argument_error(
        "batch_sizes",
        sprintf("NULL or whole numbers in [1, n] = [1, %s]", format(n)),
        batch_sizes, frame_call(environment())
      )
    }
  }
  check_accounting_number(min_steps, "min_steps")
  check_accountant(accountant)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = c("n", "min_steps"))
  if (!is.null(batch_sizes)) {
    args$batch_sizes <- as.list(as.integer(batch_sizes))
  }
  plan <- call_core("plan_dp_training", args, frame_call(environment()),
                    submodule = "planner", convert = FALSE)
  candidates <- reticulate::py_to_r(
    reticulate::import_builtins(convert = FALSE)$list(plan$candidates)
  )
  field <- function(name) {
    vapply(candidates, function(candidate) {
      as.numeric(reticulate::py_to_r(reticulate::py_get_attr(candidate, name)))
    }, numeric(1))
  }
  value <- function(name) reticulate::py_to_r(reticulate::py_get_attr(plan, name))
  structure(
    list(
      batch_size = value("batch_size"),
      noise_multiplier = value("noise_multiplier"),
      steps = value("steps"),
      epsilon = value("epsilon"),
      noise_to_signal = value("noise_to_signal"),
      sampling_rate = value("sampling_rate"),
      candidates = data.frame(
        batch_size = as.integer(field("batch_size")),
        noise_multiplier = field("noise_multiplier"),
        steps = as.integer(field("steps")),
        epsilon = field("epsilon"),
        noise_to_signal = field("noise_to_signal")
      ),
      text = reticulate::py_str(plan)
    ),
    class = "pydpr_dp_plan"
  )
}

#' @export
print.pydpr_dp_plan <- function(x, ...) {
  cat(x$text, "\n", sep = "")
  invisible(x)
}
