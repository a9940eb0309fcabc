"""The private training step that `model.fit()` runs when the model's optimizer is a DP optimizer.

Keras 3 (TensorFlow backend) computes one aggregated gradient in `train_step` and hands it to the
optimizer, too late to clip per example. Importing `pydp_r.optimizers` therefore routes, through
`pydp_r._keras_seam`, the training step of models compiled with a DP optimizer to
`dp_train_step`: Keras' own step with the gradient replaced by clipped, noised per-example
gradients; every other model keeps Keras' step, unchanged. Models that override `train_step`
themselves keep their own; a DP optimizer then refuses their aggregated gradients with an error.
`fit()` of a DP model also gets a `pydp_r.callbacks.LedgerRecorder`, which records in the
optimizer's privacy ledger what ran.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam, callbacks, clipping, fast_clipping
from pydp_r.batch_norm import check_no_batch_norm
from pydp_r.ledger import USER
from pydp_r.optimizers import DPOptimizerMixin

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


def _dp_optimizer(model: keras.Model) -> DPOptimizerMixin:
    optimizer = model.optimizer
    if not isinstance(optimizer, DPOptimizerMixin):
        raise ValueError(_MIXED_PRECISION_MESSAGE.format(model=model.name))
    return optimizer


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


def dp_train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """One DP-SGD step of `model` on a batch `data` (`x`, `(x, y)` or `(x, y, sample_weight)`).

    Keras' `train_step` with the gradient replaced: each example's loss (the model's compiled
    loss, sample weight, regularization and `loss_scale_factor` included, computed on that
    example alone) is differentiated separately; the gradients are clipped, summed, noised and
    averaged, then applied. The loss tracker and metrics are updated as in Keras' own step.
    Models made of per-example layers take the fast path (`pydp_r.fast_clipping`), all others
    the general vectorized one (`pydp_r.clipping`); both compute the same clipped sum.

    Batches padded with zero-weight rows (Poisson batches from `poisson_batches`, or a partial
    last batch padded for microbatches) report the loss and metrics of their real rows.
    """
    optimizer = _dp_optimizer(model)
    check_no_batch_norm(model)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, y, sample_weight, non_finite = clipping.without_non_finite_examples(x, y, sample_weight)
    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    loss_scale = float(optimizer.loss_scale_factor or 1.0)
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
    if num_microbatches is not None and targets:
        x_units, targets_units = _padded_to_multiple(x, targets, num_microbatches)
    else:
        x_units, targets_units = x, targets

    def forward(inputs: Any) -> Any:
        if _keras_seam.call_has_training_arg(model):
            return model(inputs, training=True)
        return model(inputs)

    def loss_of(unit_x: Any, unit_targets: dict[str, Any], y_pred: Any) -> tf.Tensor:
        loss = _keras_seam.compute_loss(
            model, unit_x, unit_targets.get("y"), y_pred, unit_targets.get("sample_weight")
        )
        # A loss with reduction="none" (as in TF Privacy's tutorials) gives one value per
        # example (or per step): the unit's loss is their mean, as "sum_over_batch_size"
        # reduces it, so that a microbatch's gradient is its examples' mean gradient, not
        # their sum. A reduced (scalar) loss is unchanged.
        loss = tf.reduce_mean(loss)
        return _keras_seam.unscale_loss_for_distribution(loss)

    if not model.trainable_weights:
        forward(x)  # Subclassed models create their weights on the first call.
    trainable_weights = model.trainable_weights
    if not trainable_weights:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return model.compute_metrics(x, y, forward(x), sample_weight=sample_weight)

    # Losses scaled by `loss_scale` give gradients scaled alike: clip and noise at the same
    # scale, and `apply` divides the scale back out, as Keras' own step does.
    scaled_clip = optimizer.l2_norm_clip * loss_scale
    rows = tf.shape(tf.nest.flatten(x_units)[0])[0]
    with _per_output_loss_metrics_paused(model):
        result = None
        if fast_clipping.takes_fast_path(model, x_units, has_targets=bool(targets)):
            try:
                result = fast_clipping.clipped_gradient_sum(
                    model,
                    lambda unit_targets, y_pred: loss_of(None, unit_targets, y_pred) * loss_scale,
                    x_units,
                    targets_units,
                    scaled_clip,
                    num_microbatches,
                )
            except fast_clipping.NotSupported as declined:
                fast_clipping.note_general_path(model, declined)
        if result is None:

            def unit_loss(unit: dict[str, Any]) -> tuple[tf.Tensor, Any]:
                y_pred = forward(unit["x"])
                return loss_of(unit["x"], unit, y_pred) * loss_scale, y_pred

            units = num_microbatches or rows
            with _keras_seam.activity_losses_as_keras_sums(model, units):
                result = clipping.clipped_gradient_sum(
                    unit_loss,
                    {"x": x_units, **targets_units},
                    trainable_weights,
                    scaled_clip,
                    num_microbatches,
                )
    gradient_sums, unit_losses, y_pred, num_units = result
    # Microbatch padding: average over the units the real rows fill (batch / rows per unit),
    # as Keras averages over the batch; the same as num_units when nothing was padded.
    filled_units = tf.cast(num_units, tf.float32) * tf.cast(batch_size, tf.float32)
    filled_units = filled_units / tf.cast(rows, tf.float32)
    gradients = optimizer.private_gradients(gradient_sums, filled_units, loss_scale)
    optimizer.apply_gradients(zip(gradients, trainable_weights, strict=True))
    optimizer._count_examples(batch_size)
    optimizer.count_non_finite_examples(non_finite)

    # Zero-weight padding dilutes the mean loss: report the mean over the real rows.
    mean_loss = tf.reduce_mean(unit_losses) / loss_scale
    real_rows = batch_size
    y_pred = tf.nest.map_structure(lambda tensor: tensor[:batch_size], y_pred)
    if optimizer.input_is_padded and sample_weight is not None:
        real = tf.reshape(sample_weight > 0, [-1])  # Poisson batches pad with weight 0
        real_rows = tf.cast(tf.math.count_nonzero(real), tf.int32)
        if not model.jit_compile:  # XLA needs static shapes: weighted metrics only there
            keep = lambda tensor: tf.boolean_mask(tensor, real)  # noqa: E731
            x, y, y_pred, sample_weight = (
                tf.nest.map_structure(keep, value) for value in (x, y, y_pred, sample_weight)
            )
    mean_loss = mean_loss * tf.cast(rows, mean_loss.dtype)
    mean_loss = mean_loss / tf.cast(tf.maximum(real_rows, 1), mean_loss.dtype)
    _keras_seam.loss_tracker(model).update_state(mean_loss, sample_weight=real_rows)
    compile_loss, loss_metrics = _keras_seam.compiled_loss_metrics(model)
    if compile_loss is not None and loss_metrics:
        compile_loss(y, y_pred, sample_weight)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def before_fit(model: keras.Model, arguments: dict[str, Any]) -> Callable[[], None]:
    """Check a DP model's `fit()` call and add the recorder of its privacy ledger.

    Returns:
        What to run when `fit()` ends, however it ends: record a partial epoch's steps.
    """
    optimizer = _dp_optimizer(model)
    recorder = callbacks.LedgerRecorder(optimizer, callbacks.describe_fit_input(arguments))
    given = arguments.get("callbacks")
    if isinstance(given, keras.callbacks.CallbackList):
        given.callbacks.insert(0, recorder)
        recorder.set_model(model)
    else:
        arguments["callbacks"] = [recorder, *(given or [])]
    poisson = recorder.fit_input.poisson
    user_blocks = None
    if poisson is not None and poisson.unit == USER:
        user_blocks = (poisson.max_batch_size, poisson.examples_per_unit)
        _check_user_level(model, optimizer, poisson.max_batch_size)
    if (optimizer.input_is_padded, optimizer.user_blocks) != (
        recorder.fit_input.padded,
        user_blocks,
    ):
        optimizer.input_is_padded = recorder.fit_input.padded
        optimizer.user_blocks = user_blocks
        # The traced step reads these: trace again for the new kind of input.
        model.train_function = None
    return recorder.end_fit


def _check_user_level(model: keras.Model, optimizer: DPOptimizerMixin, users: int) -> None:
    """Refuse what user-level batches cannot run with: microbatches of their own, or replicas
    that would split a user's block."""
    if optimizer.num_microbatches is not None:
        raise ValueError(
            f"num_microbatches={optimizer.num_microbatches} cannot be combined with user-level "
            "poisson_batches (user_ids=...), which clip each user's examples as one unit: build "
            "the optimizer with num_microbatches=None."
        )
    replicas = model.distribute_strategy.num_replicas_in_sync
    if users % replicas:
        raise ValueError(
            f"max_batch_size={users} users must be a multiple of the {replicas} replicas, so that "
            "no user's rows are split between them; give poisson_batches a max_batch_size that is."
        )


_keras_seam.install(uses_dp, dp_train_step, before_fit)
