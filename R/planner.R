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
#' @param unit `"example"` (default) or `"user"`. With `"user"` the plan is
#'   per wearer: `n` counts wearers who each bring `max_examples_per_user`
#'   examples; give two of `n`, `target_epsilon` and `noise_to_signal`, and the
#'   plan answers the third (the least noisy steps, the wearers needed, or the
#'   epsilon) for user-level DP-SGD and for example-level sampling with group
#'   privacy at the same rate and steps, and says which is better and by what
#'   factor.
#' @param max_examples_per_user With `unit = "user"`: the examples each wearer
#'   brings to a step, a whole number >= 1. Defaults to `NULL`; required there.
#' @param noise_to_signal With `unit = "user"`: the noise-to-signal to reach, a
#'   number > 0, or `NULL` (default) to plan for the least noisy steps.
#'
#' @return For `unit = "user"`, a list of class `pydpr_user_level_plan` with
#'   `solved_for`, `better` (`"user"` or `"example"`), `advantage` (the factor),
#'   `sampling_rate` (of wearers, for [poisson_batches()]), `routes` (a data
#'   frame, one row per route: `route`, `n_users`, `sampling_rate`,
#'   `expected_batch_size`, `noise_multiplier`, `steps`, `user_epsilon`,
#'   `noise_to_signal`) and `text`. Otherwise a list of class `pydpr_dp_plan` with `batch_size`,
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
#' # Per wearer: how many wearers for epsilon 1 at noise-to-signal 0.05?
#' plan_dp_training(target_epsilon = 1, epochs = 20, delta = 1e-6,
#'                  unit = "user", max_examples_per_user = 32,
#'                  noise_to_signal = 0.05)
plan_dp_training <- function(n = NULL, target_epsilon = NULL, epochs, delta,
                             batch_sizes = NULL, min_steps = 150,
                             accountant = "rdp", unit = "example",
                             max_examples_per_user = NULL,
                             noise_to_signal = NULL) {
  check_choice(unit, "unit", c("example", "user"))
  per_wearer <- identical(unit, "user")
  check_accounting_number(n, "n", null_ok = per_wearer)
  check_accounting_number(target_epsilon, "target_epsilon",
                          null_ok = per_wearer)
  check_accounting_number(max_examples_per_user, "max_examples_per_user",
                          null_ok = TRUE)
  check_number(noise_to_signal, "noise_to_signal", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, null_ok = TRUE)
  check_epochs_and_delta(epochs, delta)
  if (!is.null(batch_sizes)) {
    ok <- is.numeric(batch_sizes) && length(batch_sizes) >= 1L &&
      !anyNA(batch_sizes) && all(batch_sizes == trunc(batch_sizes)) &&
      all(batch_sizes >= 1) && (is.null(n) || all(batch_sizes <= n))
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
                        integers = c("n", "min_steps",
                                     "max_examples_per_user"))
  if (!is.null(batch_sizes)) {
    args$batch_sizes <- as.list(as.integer(batch_sizes))
  }
  # Python's first two arguments may be None: pass them always, by name.
  first <- list(n = if (is.null(n)) NULL else as_python_integer(n),
                target_epsilon = target_epsilon)
  args <- c(first, args[setdiff(names(args), names(first))])
  plan <- call_core("plan_dp_training", args, frame_call(environment()),
                    submodule = "planner", convert = FALSE)
  if (per_wearer) {
    return(user_level_plan(plan))
  }
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

# The R view of a Python UserLevelPlan.
user_level_plan <- function(plan) {
  value <- function(object, name) {
    reticulate::py_to_r(reticulate::py_get_attr(object, name))
  }
  routes <- lapply(c("user_level", "example_level"), function(name) {
    route <- reticulate::py_get_attr(plan, name)
    data.frame(
      route = value(route, "name"),
      n_users = as.integer(value(route, "n_users")),
      sampling_rate = value(route, "sampling_rate"),
      expected_batch_size = value(route, "expected_batch_size"),
      noise_multiplier = value(route, "noise_multiplier"),
      steps = as.integer(value(route, "steps")),
      user_epsilon = value(route, "user_epsilon"),
      noise_to_signal = value(route, "noise_to_signal")
    )
  })
  structure(
    list(
      solved_for = value(plan, "solved_for"),
      better = value(plan, "better"),
      advantage = value(plan, "advantage"),
      sampling_rate = value(plan, "sampling_rate"),
      routes = do.call(rbind, routes),
      text = reticulate::py_str(plan)
    ),
    class = "pydpr_user_level_plan"
  )
}

#' @export
print.pydpr_user_level_plan <- function(x, ...) {
  cat(x$text, "\n", sep = "")
  invisible(x)
}
