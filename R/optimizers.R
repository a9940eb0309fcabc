#' DP-SGD optimizers
#'
#' Differentially private versions of the Keras optimizers Adam, SGD, Adagrad
#' and RMSprop: each example's gradient is clipped to L2 norm `l2_norm_clip`,
#' the clipped gradients are summed, Gaussian noise of standard deviation
#' `noise_multiplier * l2_norm_clip` is added, and the wrapped optimizer applies
#' the noisy average. Use the result like any Keras optimizer: with keras3's
#' `compile()` or with a model made through `reticulate::import("keras")`, then
#' an ordinary `fit()`. [compute_epsilon()] tells the privacy spent.
#'
#' The wrapped optimizer's arguments have keras3's names and defaults (those
#' of `optimizer_adam()` etc.). Only the arguments you supply are passed to
#' Python, so the Python class's defaults apply to the others; whole-number
#' arguments are passed as integers.
#'
#' BatchNormalization mixes the examples of a batch and is refused in DP
#' training; see [replace_batch_norm()].
#'
#' @param l2_norm_clip Clipping bound C, a number > 0 (no default): the L2 norm
#'   of each example's gradient over all trainable weights is scaled down to at
#'   most C.
#' @param noise_multiplier Ratio of the noise standard deviation to
#'   `l2_norm_clip`, a number in \[0, 1e4\] (no default; the range the
#'   accountant covers). 0 adds no noise and gives no privacy (Python warns).
#' @param num_microbatches `NULL` (default) clips every example separately; a
#'   whole number k >= 1 dividing the batch size clips the mean gradient of each
#'   of k equal microbatches instead (faster, and doubles the sensitivity: pass
#'   `used_microbatching = TRUE` to [compute_epsilon()]).
#' @param learning_rate Learning rate, a number >= 0 or a Keras learning-rate
#'   schedule. Defaults to `0.001` (`0.01` for `optimizer_dp_sgd()`). DP training
#'   often wants a larger rate than non-private training.
#' @param beta_1 Exponential decay rate of the first-moment estimates, a number
#'   in \[0, 1\]. Defaults to `0.9`.
#' @param beta_2 Exponential decay rate of the second-moment estimates, a number
#'   in \[0, 1\]. Defaults to `0.999`.
#' @param epsilon Small constant for numerical stability, a number >= 0 (the
#'   optimizer's, not the privacy epsilon). Defaults to `1e-07`.
#' @param amsgrad Whether to use the AMSGrad variant of Adam. Defaults to
#'   `FALSE`.
#' @param momentum Momentum, a number >= 0 (in \[0, 1\] for SGD). Defaults to
#'   `0`.
#' @param nesterov Whether to use Nesterov momentum. Defaults to `FALSE`.
#' @param initial_accumulator_value Starting value of Adagrad's accumulators, a
#'   number >= 0. Defaults to `0.1`.
#' @param rho Discounting factor of RMSprop's gradient history, a number in
#'   \[0, 1\]. Defaults to `0.9`.
#' @param centered Whether RMSprop normalizes by the estimated variance of the
#'   gradient. Defaults to `FALSE`.
#' @param weight_decay `NULL` (default, none) or a weight decay, a number >= 0.
#' @param clipnorm `NULL` (default) or a number > 0: Keras' per-weight gradient
#'   norm clipping, applied after the DP step (it is not the DP clipping).
#' @param clipvalue `NULL` (default) or a number > 0: Keras' per-value gradient
#'   clipping, applied after the DP step.
#' @param global_clipnorm `NULL` (default) or a number > 0: Keras' global
#'   gradient norm clipping, applied after the DP step.
#' @param use_ema Whether to keep an exponential moving average of the weights.
#'   Defaults to `FALSE`.
#' @param ema_momentum Momentum of that moving average, a number in \[0, 1\].
#'   Defaults to `0.99`.
#' @param ema_overwrite_frequency `NULL` (default) or a whole number >= 1: every
#'   this many steps the weights are overwritten by their moving average.
#' @param name `NULL` (default: the Python class's own name, such as
#'   `"dp_adam"`) or a string naming the optimizer.
#' @param ... Further named arguments, passed to the Python class as keyword
#'   arguments.
#' @param loss_scale_factor `NULL` (default) or a number > 0 multiplying the
#'   loss before gradients are computed (and dividing the gradients after).
#' @param gradient_accumulation_steps `NULL` (default, off) or a whole
#'   number >= 1: clipped gradients of this many consecutive batches are accumulated
#'   and noised once, so the logical batch is this many times the batch size
#'   (pass that logical size to [compute_epsilon()]).
#'
#' @return A Python Keras optimizer object (`pydp_r.DPAdam`, `pydp_r.DPSGD`,
#'   `pydp_r.DPAdagrad` or `pydp_r.DPRMSprop`) with fields `l2_norm_clip`,
#'   `noise_multiplier` and `num_microbatches`.
#' @name optimizer_dp
#' @examplesIf pydp_r_available()
#' keras <- reticulate::import("keras")
#' model <- keras$Sequential(list(keras$Input(shape = list(3L)),
#'                                keras$layers$Dense(1L)))
#' optimizer <- optimizer_dp_adam(l2_norm_clip = 1, noise_multiplier = 1.1,
#'                                learning_rate = 0.01)
#' model$compile(optimizer = optimizer, loss = "mse")
#' optimizer$noise_multiplier
NULL

#' @rdname optimizer_dp
#' @export
optimizer_dp_adam <- function(l2_norm_clip, noise_multiplier,
                              num_microbatches = NULL, learning_rate = 0.001,
                              beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-07,
                              amsgrad = FALSE, weight_decay = NULL,
                              clipnorm = NULL, clipvalue = NULL,
                              global_clipnorm = NULL, use_ema = FALSE,
                              ema_momentum = 0.99,
                              ema_overwrite_frequency = NULL, name = NULL, ...,
                              loss_scale_factor = NULL,
                              gradient_accumulation_steps = NULL) {
  check_dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
  check_learning_rate(learning_rate)
  check_number(beta_1, "beta_1", min = 0, max = 1)
  check_number(beta_2, "beta_2", min = 0, max = 1)
  check_number(epsilon, "epsilon", min = 0, max = Inf, max_open = TRUE)
  check_flag(amsgrad, "amsgrad")
  check_keras_args(weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
                   ema_momentum, ema_overwrite_frequency, name,
                   loss_scale_factor, gradient_accumulation_steps)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = optimizer_integer_args)
  new_dp_optimizer("DPAdam", args)
}

#' @rdname optimizer_dp
#' @export
optimizer_dp_sgd <- function(l2_norm_clip, noise_multiplier,
                             num_microbatches = NULL, learning_rate = 0.01,
                             momentum = 0, nesterov = FALSE,
                             weight_decay = NULL, clipnorm = NULL,
                             clipvalue = NULL, global_clipnorm = NULL,
                             use_ema = FALSE, ema_momentum = 0.99,
                             ema_overwrite_frequency = NULL, name = NULL, ...,
                             loss_scale_factor = NULL,
                             gradient_accumulation_steps = NULL) {
  check_dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
  check_learning_rate(learning_rate)
  check_number(momentum, "momentum", min = 0, max = 1)
  check_flag(nesterov, "nesterov")
  check_keras_args(weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
                   ema_momentum, ema_overwrite_frequency, name,
                   loss_scale_factor, gradient_accumulation_steps)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = optimizer_integer_args)
  new_dp_optimizer("DPSGD", args)
}

#' @rdname optimizer_dp
#' @export
optimizer_dp_adagrad <- function(l2_norm_clip, noise_multiplier,
                                 num_microbatches = NULL, learning_rate = 0.001,
                                 initial_accumulator_value = 0.1,
                                 epsilon = 1e-07, weight_decay = NULL,
                                 clipnorm = NULL, clipvalue = NULL,
                                 global_clipnorm = NULL, use_ema = FALSE,
                                 ema_momentum = 0.99,
                                 ema_overwrite_frequency = NULL, name = NULL,
                                 ..., loss_scale_factor = NULL,
                                 gradient_accumulation_steps = NULL) {
  check_dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
  check_learning_rate(learning_rate)
  check_number(initial_accumulator_value, "initial_accumulator_value",
               min = 0, max = Inf, max_open = TRUE)
  check_number(epsilon, "epsilon", min = 0, max = Inf, max_open = TRUE)
  check_keras_args(weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
                   ema_momentum, ema_overwrite_frequency, name,
                   loss_scale_factor, gradient_accumulation_steps)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = optimizer_integer_args)
  new_dp_optimizer("DPAdagrad", args)
}

#' @rdname optimizer_dp
#' @export
optimizer_dp_rmsprop <- function(l2_norm_clip, noise_multiplier,
                                 num_microbatches = NULL, learning_rate = 0.001,
                                 rho = 0.9, momentum = 0, epsilon = 1e-07,
                                 centered = FALSE, weight_decay = NULL,
                                 clipnorm = NULL, clipvalue = NULL,
                                 global_clipnorm = NULL, use_ema = FALSE,
                                 ema_momentum = 0.99,
                                 ema_overwrite_frequency = NULL, name = NULL,
                                 ..., loss_scale_factor = NULL,
                                 gradient_accumulation_steps = NULL) {
  check_dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
  check_learning_rate(learning_rate)
  check_number(rho, "rho", min = 0, max = 1)
  check_number(momentum, "momentum", min = 0, max = Inf, max_open = TRUE)
  check_number(epsilon, "epsilon", min = 0, max = Inf, max_open = TRUE)
  check_flag(centered, "centered")
  check_keras_args(weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
                   ema_momentum, ema_overwrite_frequency, name,
                   loss_scale_factor, gradient_accumulation_steps)
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = optimizer_integer_args)
  new_dp_optimizer("DPRMSprop", args)
}

optimizer_integer_args <- c(
  "num_microbatches", "ema_overwrite_frequency", "gradient_accumulation_steps"
)

check_dp_args <- function(l2_norm_clip, noise_multiplier, num_microbatches,
                          call = frame_call(parent.frame())) {
  check_number(l2_norm_clip, "l2_norm_clip", min = 0, max = Inf,
               min_open = TRUE, max_open = TRUE, call = call)
  check_noise_multiplier(noise_multiplier, call = call)
  check_count(num_microbatches, "num_microbatches", null_ok = TRUE, call = call)
}

# Arguments every Keras 3 optimizer shares.
check_keras_args <- function(weight_decay, clipnorm, clipvalue, global_clipnorm,
                             use_ema, ema_momentum, ema_overwrite_frequency,
                             name, loss_scale_factor,
                             gradient_accumulation_steps,
                             call = frame_call(parent.frame())) {
  check_number(weight_decay, "weight_decay", min = 0, max = Inf,
               max_open = TRUE, null_ok = TRUE, call = call)
  for (arg in c("clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor")) {
    check_number(get(arg), arg, min = 0, max = Inf, min_open = TRUE,
                 max_open = TRUE, null_ok = TRUE, call = call)
  }
  check_flag(use_ema, "use_ema", call = call)
  check_number(ema_momentum, "ema_momentum", min = 0, max = 1, call = call)
  check_count(ema_overwrite_frequency, "ema_overwrite_frequency",
              null_ok = TRUE, call = call)
  check_string(name, "name", null_ok = TRUE, call = call)
  check_count(gradient_accumulation_steps, "gradient_accumulation_steps",
              null_ok = TRUE, call = call)
}

new_dp_optimizer <- function(class_name, args,
                             call = frame_call(parent.frame())) {
  call_core(class_name, args, call)
}
