"""The private training step that `model.fit()` runs when the model's optimizer is a DP optimizer.

Keras 3 (TensorFlow backend) computes one aggregated gradient in `train_step` and hands it to the
optimizer, too late to clip per example. Importing `pydp_r` therefore wraps
`TensorFlowTrainer.train_step` once: models compiled with a DP optimizer get `dp_train_step`,
every other model the original step, unchanged. Models that override `train_step` themselves
keep their own; a DP optimizer then refuses their aggregated gradients with an error.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from keras.src.losses import loss as loss_module
from keras.src.trainers.data_adapters import data_adapter_utils

from pydp_r import clipping, fast_clipping
from pydp_r.batch_norm import check_no_batch_norm
from pydp_r.optimizers import DPOptimizerMixin


@contextlib.contextmanager
def _per_output_loss_metrics_paused(model: keras.Model) -> Iterator[None]:
    """Stop the compiled loss from updating its per-output loss metrics inside vectorized code.

    Those metrics are updated once on the whole batch after the per-example pass instead.
    """
    compile_loss = getattr(model, "_compile_loss", None)
    metrics = list(getattr(compile_loss, "metrics", None) or [])
    for metric in metrics:
        metric.update_state = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for metric in metrics:
            del metric.update_state


def dp_train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """One DP-SGD step of `model` on a batch `data` (`x`, `(x, y)` or `(x, y, sample_weight)`).

    Each example's loss (the model's compiled loss, sample weight and regularization included,
    computed on that example alone) is differentiated separately; the optimizer clips, sums,
    noises and averages these gradients, then updates the weights. Metrics and the loss tracker
    are updated as in Keras' own step. Models made of per-example layers take the fast path
    (`pydp_r.fast_clipping`), all others the general vectorized one (`pydp_r.clipping`); both
    compute the same clipped sum.
    """
    optimizer = model.optimizer
    check_no_batch_norm(model)
    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    targets = {}
    if y is not None:
        targets["y"] = y
    if sample_weight is not None:
        targets["sample_weight"] = sample_weight

    def forward(inputs: Any) -> Any:
        if model._call_has_training_arg:
            return model(inputs, training=True)
        return model(inputs)

    def loss_of(unit_x: Any, unit_targets: dict[str, Any], y_pred: Any) -> tf.Tensor:
        loss = model._compute_loss(
            x=unit_x,
            y=unit_targets.get("y"),
            y_pred=y_pred,
            sample_weight=unit_targets.get("sample_weight"),
            training=True,
        )
        return loss_module.unscale_loss_for_distribution(loss)

    if not model.trainable_weights:
        forward(x)  # Subclassed models create their weights on the first call.
    trainable_weights = model.trainable_weights
    if not trainable_weights:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return model.compute_metrics(x, y, forward(x), sample_weight=sample_weight)

    with _per_output_loss_metrics_paused(model):
        result = None
        if targets and fast_clipping.unsupported_reason(model) is None:
            try:
                result = fast_clipping.clipped_gradient_sum(
                    model,
                    lambda unit_targets, y_pred: loss_of(None, unit_targets, y_pred),
                    x,
                    targets,
                    optimizer.l2_norm_clip,
                    optimizer.num_microbatches,
                )
            except fast_clipping.NotSupported:
                result = None
        if result is None:

            def unit_loss(unit: dict[str, Any]) -> tuple[tf.Tensor, Any]:
                y_pred = forward(unit["x"])
                return loss_of(unit["x"], unit, y_pred), y_pred

            result = clipping.clipped_gradient_sum(
                unit_loss,
                {"x": x, **targets},
                trainable_weights,
                optimizer.l2_norm_clip,
                optimizer.num_microbatches,
            )
    gradient_sums, unit_losses, y_pred, num_units = result
    gradients = optimizer._noised_average(gradient_sums, num_units)
    optimizer.apply_gradients(zip(gradients, trainable_weights, strict=True))

    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    model._loss_tracker.update_state(tf.reduce_mean(unit_losses), sample_weight=batch_size)
    compile_loss = getattr(model, "_compile_loss", None)
    if compile_loss is not None and compile_loss.metrics:
        compile_loss(y, y_pred, sample_weight)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


_original_train_step = TensorFlowTrainer.train_step


def _train_step_dispatch(self: keras.Model, data: Any) -> dict[str, Any]:
    if isinstance(self.optimizer, DPOptimizerMixin):
        return dp_train_step(self, data)
    return _original_train_step(self, data)


def install() -> None:
    """Route `fit()` of models compiled with a DP optimizer through `dp_train_step` (idempotent)."""
    if TensorFlowTrainer.train_step is not _train_step_dispatch:
        TensorFlowTrainer.train_step = _train_step_dispatch
