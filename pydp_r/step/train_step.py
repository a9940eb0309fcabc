"""The private training step that `model.fit()` runs when the model's optimizer is a DP optimizer.

Keras' `train_step` with the gradient replaced: the batch is cleaned and cut into units
(examples, microbatches, or users' blocks of rows), each unit's gradient is clipped (fast path
from layer rules, or the general vectorized path), the clipped sum is noised and averaged by the
optimizer (which counts the release), applied, and the loss and metrics are reported over the
real rows. Each part is a named function below; `dp_train_step` only chains them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam
from pydp_r.batch_norm import check_no_batch_norm
from pydp_r.optimizers import DPOptimizerMixin
from pydp_r.step import clipping, fast_clipping

_MIXED_PRECISION_MESSAGE = (
    "Model '{model}' wraps its DP optimizer in a LossScaleOptimizer (mixed precision with "
    "automatic loss scaling, e.g. the 'mixed_float16' policy). Dynamic loss scaling skips steps "
    "whose gradients overflow, and whether one example's gradient overflows is not protected by "
    "the noise, so it is not supported with DP. Compile with "
    "`model.compile(..., auto_scale_loss=False)` (optionally giving the DP optimizer a fixed "
    "`loss_scale_factor`), or use the 'mixed_bfloat16' policy, which needs no loss scaling."
)


def uses_dp(model: keras.Model) -> bool:
    """Whether `model` is compiled with a DP optimizer (directly or inside a wrapper)."""
    optimizer = getattr(model, "optimizer", None)
    return isinstance(optimizer, DPOptimizerMixin) or isinstance(
        getattr(optimizer, "inner_optimizer", None), DPOptimizerMixin
    )


def dp_optimizer(model: keras.Model) -> DPOptimizerMixin:
    """The model's DP optimizer; a ValueError for one wrapped for loss scaling."""
    optimizer = model.optimizer
    if not isinstance(optimizer, DPOptimizerMixin):
        raise ValueError(_MIXED_PRECISION_MESSAGE.format(model=model.name))
    return optimizer


@dataclasses.dataclass
class _Batch:
    """One training batch as the step sees it.

    Attributes:
        x, y, sample_weight: The batch after examples with NaN or inf were taken out.
        rows: Rows of the batch as it came, padding included (a scalar tensor): with
            `num_units`, what the noisy sum is divided by.
        non_finite: Examples taken out (an int64 scalar).
        x_units, targets_units: Inputs and targets (`{"y": ..., "sample_weight": ...}`) padded
            to whole units.
        num_microbatches: Units per batch, or None for one unit per example.
    """

    x: Any
    y: Any
    sample_weight: Any
    rows: tf.Tensor
    non_finite: tf.Tensor
    x_units: Any
    targets_units: dict[str, Any]
    num_microbatches: int | None


def dp_train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """One DP-SGD step of `model` on a batch `data` (`x`, `(x, y)` or `(x, y, sample_weight)`).

    Each unit's loss (the model's compiled loss, sample weight, regularization and
    `loss_scale_factor` included, computed on that unit alone) is differentiated separately;
    the gradients are clipped, summed, noised and averaged, then applied. Models made of
    per-example layers take the fast path (`pydp_r.step.fast_clipping`), all others the general
    vectorized one (`pydp_r.step.clipping`); both compute the same clipped sum. Batches padded
    with zero-weight rows (Poisson batches, a partial last batch padded for microbatches) report
    the loss and metrics of their real rows, as Keras' own step reports a batch.
    """
    optimizer = dp_optimizer(model)
    check_no_batch_norm(model)
    batch = _prepared_batch(optimizer, data, static_shapes=bool(model.jit_compile))
    if not model.trainable_weights:
        _forward(model, batch.x)  # Subclassed models create their weights on the first call.
    if not model.trainable_weights:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return model.compute_metrics(
            batch.x, batch.y, _forward(model, batch.x), sample_weight=batch.sample_weight
        )
    loss_scale = float(optimizer.loss_scale_factor or 1.0)
    gradient_sums, unit_losses, y_pred, filled_units = _clipped_gradient_sums(
        model, batch, optimizer.l2_norm_clip, loss_scale
    )
    gradients = optimizer.private_gradients(gradient_sums, filled_units, loss_scale)
    optimizer.apply_gradients(zip(gradients, model.trainable_weights, strict=True))
    optimizer.count_examples(batch.rows)
    optimizer.count_non_finite_examples(batch.non_finite)
    return _reported_metrics(model, optimizer, batch, unit_losses / loss_scale, y_pred)


def _prepared_batch(optimizer: DPOptimizerMixin, data: Any, static_shapes: bool) -> _Batch:
    """Unpack `data`, take out non-finite examples, and pad it to whole units.

    Poisson batches of examples also lose their padding rows here (unless the step needs
    static shapes, under XLA): rows of weight 0 add nothing to the clipped sum, and a default
    batch bound is often 1.5x the expected batch. `rows` stays the padded count, the
    data-independent divisor of the noisy sum.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, y, sample_weight, non_finite = clipping.without_non_finite_examples(x, y, sample_weight)
    rows = tf.shape(tf.nest.flatten(x)[0])[0]
    if (
        optimizer.input_is_padded
        and optimizer.user_blocks is None
        and optimizer.num_microbatches is None
        and sample_weight is not None
        and not static_shapes
    ):
        x, y, sample_weight = _without_padding(x, y, sample_weight)
    targets = {}
    if y is not None:
        targets["y"] = y
    if sample_weight is not None:
        targets["sample_weight"] = sample_weight
    num_microbatches = optimizer.num_microbatches
    if optimizer.user_blocks is not None:
        # User-level Poisson batches: each user's block of rows is one unit, clipped as one.
        users_per_batch, _ = optimizer.user_blocks
        num_microbatches = users_per_batch // tf.distribute.get_strategy().num_replicas_in_sync
    x_units, targets_units = x, targets
    if num_microbatches is not None and targets:
        x_units, targets_units = _padded_to_multiple(x, targets, num_microbatches)
    return _Batch(x, y, sample_weight, rows, non_finite, x_units, targets_units, num_microbatches)


def _without_padding(x: Any, y: Any, sample_weight: tf.Tensor) -> tuple[Any, Any, tf.Tensor]:
    """The rows of positive weight (and always the first row, so that a batch that drew no
    example still has a row, of weight 0, for the loss to be defined on)."""
    keep = tf.reshape(sample_weight > 0, [-1])
    keep = tf.logical_or(keep, tf.equal(tf.range(tf.size(keep)), 0))
    kept = lambda tensor: tf.boolean_mask(tensor, keep)  # noqa: E731
    y = None if y is None else tf.nest.map_structure(kept, y)
    return tf.nest.map_structure(kept, x), y, kept(sample_weight)


def _forward(model: keras.Model, inputs: Any) -> Any:
    if _keras_seam.call_has_training_arg(model):
        return model(inputs, training=True)
    return model(inputs)


def _unit_loss(model: keras.Model, unit_x: Any, unit_targets: dict[str, Any], y_pred: Any) -> Any:
    """The mean loss of one unit, as Keras' `compute_loss` counts it for a batch."""
    loss = _keras_seam.compute_loss(
        model, unit_x, unit_targets.get("y"), y_pred, unit_targets.get("sample_weight")
    )
    # A loss with reduction="none" (as in TF Privacy's tutorials) gives one value per example
    # (or per step): the unit's loss is their mean, as "sum_over_batch_size" reduces it, so
    # that a microbatch's gradient is its examples' mean gradient, not their sum. A reduced
    # (scalar) loss is unchanged.
    return _keras_seam.unscale_loss_for_distribution(tf.reduce_mean(loss))


def _clipped_gradient_sums(
    model: keras.Model, batch: _Batch, l2_norm_clip: float, loss_scale: float
) -> tuple[list[tf.Tensor], tf.Tensor, Any, tf.Tensor]:
    """Sums of the units' clipped gradients, from the fast path where the model allows it.

    Losses scaled by `loss_scale` give gradients scaled alike: clipped at the same scale (the
    optimizer noises at it too and `apply` divides it back out, as Keras' own step does).

    Returns:
        `(gradient_sums, unit_losses, y_pred, filled_units)`: `filled_units` is the number of
        units the real rows fill (units padded for microbatches excluded), the divisor of the
        noisy sum, as Keras averages over the batch.
    """
    scaled_clip = l2_norm_clip * loss_scale
    has_targets = bool(batch.targets_units)
    with _per_output_loss_metrics_paused(model):
        result = None
        if fast_clipping.takes_fast_path(model, batch.x_units, has_targets=has_targets):
            try:
                result = fast_clipping.clipped_gradient_sum(
                    model,
                    lambda targets, y_pred: _unit_loss(model, None, targets, y_pred) * loss_scale,
                    batch.x_units,
                    batch.targets_units,
                    scaled_clip,
                    batch.num_microbatches,
                )
            except fast_clipping.NotSupported as declined:
                fast_clipping.note_general_path(model, declined)
        if result is None:
            result = _general_path(model, batch, scaled_clip, loss_scale)
    gradient_sums, unit_losses, y_pred, num_units = result
    padded_rows = tf.shape(tf.nest.flatten(batch.x_units)[0])[0]
    filled_units = tf.cast(num_units, tf.float32) * tf.cast(batch.rows, tf.float32)
    filled_units = filled_units / tf.cast(padded_rows, tf.float32)
    return gradient_sums, unit_losses, y_pred, filled_units


def _general_path(model: keras.Model, batch: _Batch, scaled_clip: float, loss_scale: float):
    """The clipped sum from per-unit gradients vectorized over the batch (any model)."""

    def unit_loss(unit: dict[str, Any]) -> tuple[tf.Tensor, Any]:
        y_pred = _forward(model, unit["x"])
        return _unit_loss(model, unit["x"], unit, y_pred) * loss_scale, y_pred

    units = batch.num_microbatches or tf.shape(tf.nest.flatten(batch.x_units)[0])[0]
    with _keras_seam.activity_losses_as_keras_sums(model, units):
        return clipping.clipped_gradient_sum(
            unit_loss,
            {"x": batch.x_units, **batch.targets_units},
            model.trainable_weights,
            scaled_clip,
            batch.num_microbatches,
        )


def _reported_metrics(
    model: keras.Model,
    optimizer: DPOptimizerMixin,
    batch: _Batch,
    unit_losses: tf.Tensor,
    y_pred: Any,
) -> dict[str, Any]:
    """Update the loss tracker and metrics over the batch's real rows, as Keras' step does."""
    x, y, sample_weight = batch.x, batch.y, batch.sample_weight
    padded_rows = tf.shape(tf.nest.flatten(batch.x_units)[0])[0]
    # Zero-weight padding dilutes the mean loss: report the mean over the real rows.
    real_rows = batch.rows
    y_pred = tf.nest.map_structure(lambda tensor: tensor[: batch.rows], y_pred)
    if optimizer.input_is_padded and sample_weight is not None:
        real = tf.reshape(sample_weight > 0, [-1])  # Poisson batches pad with weight 0
        real_rows = tf.cast(tf.math.count_nonzero(real), tf.int32)
        if not model.jit_compile:  # XLA needs static shapes: weighted metrics only there
            keep = lambda tensor: tf.boolean_mask(tensor, real)  # noqa: E731
            x, y, y_pred, sample_weight = (
                tf.nest.map_structure(keep, value) for value in (x, y, y_pred, sample_weight)
            )
    mean_loss = tf.reduce_mean(unit_losses) * tf.cast(padded_rows, unit_losses.dtype)
    mean_loss = mean_loss / tf.cast(tf.maximum(real_rows, 1), mean_loss.dtype)
    _keras_seam.loss_tracker(model).update_state(mean_loss, sample_weight=real_rows)
    compile_loss, loss_metrics = _keras_seam.compiled_loss_metrics(model)
    if compile_loss is not None and loss_metrics:
        compile_loss(y, y_pred, sample_weight)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


@contextlib.contextmanager
def _per_output_loss_metrics_paused(model: keras.Model) -> Iterator[None]:
    """Stop the compiled loss from updating its per-output loss metrics inside vectorized code.

    Those metrics are updated once on the whole batch after the per-example pass instead.
    """
    _, metrics = _keras_seam.compiled_loss_metrics(model)
    for metric in metrics:
        metric.update_state = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for metric in metrics:
            del metric.update_state


def _padded_to_multiple(x: Any, targets: dict[str, Any], num_microbatches: int) -> tuple:
    """Pad a batch with zero examples of sample weight 0 up to a multiple of `num_microbatches`.

    A partial last batch then still splits into `num_microbatches` equal microbatches; the
    padding adds nothing to any loss or gradient.
    """
    flat = tf.nest.flatten(x)
    batch_size = tf.shape(flat[0])[0]
    static_batch = flat[0].shape[0]
    if static_batch is not None and static_batch % num_microbatches == 0:
        return x, targets
    padding = (-batch_size) % num_microbatches
    weights = targets.get("sample_weight")
    if weights is None:
        weights = tf.ones([batch_size], tf.float32)
    targets = {**targets, "sample_weight": weights}

    def pad(tensor: Any) -> tf.Tensor:
        tensor = tf.convert_to_tensor(tensor)
        paddings = tf.concat([[[0, padding]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)], axis=0)
        return tf.pad(tensor, paddings)

    return tf.nest.map_structure(pad, x), tf.nest.map_structure(pad, targets)
