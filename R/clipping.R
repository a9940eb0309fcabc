#' Which per-example clipping path DP training takes, layer by layer
#'
#' DP training clips every example's gradient. Models whose every layer and
#' `keras.ops` operation provably computes each example's outputs from that
#' example alone take the fast path (per-example gradient norms from the
#' layers' activations, close to the cost of an ordinary step); any other model
#' takes the general path, which forms every example's gradient and is several
#' times slower. This reports, per layer and operation in call order, the rule
#' used or why the layer leaves the fast path. The first DP `fit()` of a model
#' that leaves it also logs one line saying so.
#'
#' @param model A Keras model (a Python object; no default): Sequential,
#'   functional or subclassed.
#' @param x Example inputs (any number of rows), needed only to trace a
#'   subclassed model's `call`. Defaults to `NULL`.
#'
#' @return A data frame of class `pydpr_clipping_report` with one row per layer
#'   or operation and columns `name`, `type`, `path` (`"fast"`, `"general"` or
#'   `"refused"`) and `detail` (the rule used, or the reason); its attributes
#'   `path` and `reason` give the model's path and the first reason it leaves
#'   the fast path (`NULL` when it does not).
#' @export
#' @examplesIf pydp_r_available()
#' keras <- reticulate::import("keras")
#' inputs <- keras$Input(shape = list(8L, 4L))
#' hidden <- keras$layers$Dense(4L)(inputs)
#' hidden <- keras$ops$add(hidden, inputs) # a residual, as in a transformer
#' outputs <- keras$layers$Dense(1L)(keras$layers$Flatten()(hidden))
#' clipping_report(keras$Model(inputs, outputs))
clipping_report <- function(model, x = NULL) {
  check_python_object(model, "model", "a Keras model (a Python object)")
  args <- supplied_args(match.call(expand.dots = FALSE), environment())
  names(args)[names(args) == "x"] <- "inputs"
  report <- call_core("clipping_report", args, frame_call(environment()),
                      submodule = "step.fast_clipping", convert = FALSE)
  columns <- reticulate::py_to_r(report$to_columns())
  frame <- data.frame(
    lapply(columns, function(column) as.character(unlist(column))),
    stringsAsFactors = FALSE
  )
  reason <- reticulate::py_to_r(report$reason)
  structure(
    frame,
    class = c("pydpr_clipping_report", "data.frame"),
    path = reticulate::py_to_r(report$path),
    reason = reason,
    model = reticulate::py_to_r(report$model_name)
  )
}

#' @export
print.pydpr_clipping_report <- function(x, ...) {
  header <- sprintf("Model '%s': %s path", attr(x, "model"), attr(x, "path"))
  if (!is.null(attr(x, "reason"))) {
    header <- paste0(header, " (", attr(x, "reason"), ")")
  }
  cat(header, "\n", sep = "")
  print(as.data.frame(unclass(x), stringsAsFactors = FALSE), right = FALSE,
        row.names = FALSE)
  invisible(x)
}
