#' Replace BatchNormalization layers for DP training
#'
#' BatchNormalization mixes the examples of a batch, which breaks the
#' per-example clipping bound of DP training, so the DP optimizers refuse it.
#' This returns a copy of a Sequential or functional model in which each
#' BatchNormalization layer becomes a GroupNormalization layer (the largest
#' number of groups <= `max_groups` that divides its channels) or a
#' LayerNormalization layer, keeping its name, axis and epsilon, as Opacus does
#' for PyTorch. Every other layer keeps its weights; the new normalization
#' layers start at identity. The copy is not compiled.
#'
#' @param model A built Keras Sequential or functional model (a Python object;
#'   no default). It is not modified.
#' @param replacement `"group"` (default, GroupNormalization) or `"layer"`
#'   (LayerNormalization).
#' @param max_groups Upper bound on the number of groups, a whole number >= 1.
#'   Defaults to `32`.
#'
#' @return The new Keras model (a Python object).
#' @export
#' @examplesIf pydp_r_available()
#' keras <- reticulate::import("keras")
#' model <- keras$Sequential(list(
#'   keras$Input(shape = list(12L, 6L)),
#'   keras$layers$Conv1D(32L, 3L, activation = "relu"),
#'   keras$layers$BatchNormalization(),
#'   keras$layers$GlobalAveragePooling1D(),
#'   keras$layers$Dense(1L)
#' ))
#' dp_model <- replace_batch_norm(model)
#' class(dp_model$layers[[2]])[[1]]
replace_batch_norm <- function(model, replacement = "group", max_groups = 32) {
  check_python_object(model, "model", "a Keras model (a Python object)")
  check_choice(replacement, "replacement", c("group", "layer"))
  check_count(max_groups, "max_groups")
  args <- supplied_args(match.call(expand.dots = FALSE), environment(),
                        integers = "max_groups")
  call_core("replace_batch_norm", args, frame_call(environment()))
}
