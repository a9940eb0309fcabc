"""Per-example (or per-microbatch) gradient clipping, vectorized over the batch.

The core of DP-SGD: every example's gradient of its own loss is clipped to an L2 norm bound
over all variables together, then the clipped gradients are summed. Here the per-example
gradients are computed with `tf.vectorized_map`, one batch-of-one (or one microbatch) per
vectorized lane, so no example can influence another's gradient even through layers that
mix examples within a batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from pydp_r import _keras_seam  # noqa: F401  (vectorized matrix products without broadcasting)

# Added to a norm before dividing by it, so that an all-zero gradient gets factor 1, not NaN.
_NORM_EPSILON = 1e-12


def clip_factors(squared_norms: tf.Tensor, l2_norm_clip: float) -> tf.Tensor:
    """Per-example scale factors `min(1, l2_norm_clip / norm)`.

    Args:
        squared_norms: Squared L2 norms of the per-example gradients, shape `(num_units,)`.
        l2_norm_clip: Clipping bound C, > 0.

    Returns:
        Factors in [0, 1], shape `(num_units,)`; a gradient of norm <= C is left unchanged, and
        a non-finite one (NaN or inf) gets 0: it contributes nothing, which keeps the bound.
    """
    norms = tf.sqrt(tf.maximum(squared_norms, 0.0))
    clip = tf.cast(l2_norm_clip, norms.dtype)
    factors = tf.minimum(tf.ones_like(norms), clip / (norms + _NORM_EPSILON))
    return tf.where(tf.math.is_finite(norms), factors, tf.zeros_like(factors))


def split_into_microbatches(tensors: Any, num_microbatches: int | None) -> tuple[Any, tf.Tensor]:
    """Reshape each tensor of a nested structure from `(batch, ...)` to `(units, batch/units, ...)`.

    Args:
        tensors: Nested structure of tensors sharing the leading batch dimension.
        num_microbatches: Number of units; None means one unit per example.

    Returns:
        The reshaped structure and the number of units (a scalar int32 tensor).

    Raises:
        ValueError: When the batch size is static and `num_microbatches` does not divide it.
    """
    flat = tf.nest.flatten(tensors)
    batch_size = tf.shape(flat[0])[0]
    static_batch = flat[0].shape[0]
    if num_microbatches is None:
        num_units = batch_size
    else:
        if static_batch is not None and static_batch % num_microbatches != 0:
            raise ValueError(
                f"num_microbatches must divide the batch size; received num_microbatches="
                f"{num_microbatches} for a batch of {static_batch}. Use a batch size that is a "
                "multiple of num_microbatches (and `drop_remainder=True` in tf.data)."
            )
        num_units = tf.constant(num_microbatches, tf.int32)
        tf.debugging.assert_equal(
            batch_size % num_units,
            0,
            message=f"num_microbatches={num_microbatches} must divide the batch size",
        )

    return tf.nest.map_structure(lambda tensor: split_units(tensor, num_units), tensors), num_units


def split_units(tensor: Any, num_units: tf.Tensor) -> tf.Tensor:
    """Reshape one tensor from `(batch, ...)` to `(num_units, batch / num_units, ...)`."""
    tensor = tf.convert_to_tensor(tensor)
    return tf.reshape(tensor, tf.concat([[num_units, -1], tf.shape(tensor)[1:]], 0))


def merge_microbatches(tensors: Any) -> Any:
    """Inverse of `split_into_microbatches`: `(units, per_unit, ...)` back to `(batch, ...)`."""

    def merge(tensor: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], 0))

    return tf.nest.map_structure(merge, tensors)


def clipped_gradient_sum(
    loss_fn: Callable[[Any], tuple[tf.Tensor, Any]],
    inputs: Any,
    variables: Sequence[tf.Variable],
    l2_norm_clip: float,
    num_microbatches: int | None = None,
) -> tuple[list[tf.Tensor | None], tf.Tensor, Any, tf.Tensor]:
    """Sum over units (examples or microbatches) of each unit's gradient clipped to `l2_norm_clip`.

    Args:
        loss_fn: Maps one unit (the structure of `inputs` with a leading dimension of
            batch/units) to `(mean loss of that unit, auxiliary outputs)`.
        inputs: Nested structure of tensors with a common leading batch dimension.
        variables: Variables to differentiate with respect to.
        l2_norm_clip: Clipping bound C, > 0, applied to the global L2 norm of each unit's
            gradient over all `variables` together.
        num_microbatches: None for one unit per example, else the number of units, which must
            divide the batch size.

    Returns:
        `(gradient_sums, unit_losses, aux, num_units)`: one summed clipped gradient per variable
        (zeros for a variable the loss does not depend on), the loss of every unit (shape
        `(units,)`), the auxiliary outputs merged back to batch order, and the number of units.
    """
    units, num_units = split_into_microbatches(inputs, num_microbatches)

    def unit_gradient(unit: Any) -> tuple[list[tf.Tensor], tf.Tensor, Any]:
        with tf.GradientTape() as tape:
            loss, aux = loss_fn(unit)
        gradients = tape.gradient(loss, variables)
        # A variable the loss does not reach gets zeros, made here: TensorFlow's
        # unconnected_gradients="zero" fails on Keras 3 variables, whose dtype is a string.
        gradients = [
            tf.zeros(variable.shape, variable.dtype) if gradient is None else gradient
            for gradient, variable in zip(gradients, variables, strict=True)
        ]
        return gradients, loss, aux

    per_unit_gradients, unit_losses, aux = _map_over_units(unit_gradient, units)
    squared_norms = tf.add_n(
        [
            tf.reduce_sum(tf.square(tf.cast(tf.reshape(g, [num_units, -1]), tf.float32)), axis=1)
            for g in per_unit_gradients
        ]
    )
    factors = clip_factors(squared_norms, l2_norm_clip)
    # A non-finite unit's factor is 0, and 0 * NaN is NaN: its gradient is zeroed as well.
    finite = tf.math.is_finite(squared_norms)
    gradient_sums = [
        tf.tensordot(tf.cast(factors, g.dtype), _zeroed_where_not(finite, g), axes=1)
        for g in per_unit_gradients
    ]
    return gradient_sums, unit_losses, merge_microbatches(aux), num_units


def _map_over_units(unit_fn: Callable[[Any], Any], units: Any) -> Any:
    """`unit_fn` on every unit, vectorized, or one unit at a time where pfor cannot vectorize it.

    TensorFlow's pfor (2.21) has no vectorization for some gradient graphs: a Keras RNN with an
    output the loss does not use (an encoder LSTM whose sequence output is dropped, ConvLSTM2D)
    leaves the while loop's output TensorList without a gradient, the tape fills it with a
    `zeros_like` of a TensorList, and pfor's ZerosLike converter fails on that dtype. The
    vectorized attempt is traced in a function of its own so that a failed attempt leaves no
    op (a seed or moving-statistics update) behind in the step's graph; the fallback is a
    `tf.map_fn` over units, exact (each unit's gradient still sees only that unit) but slower.
    """
    try:
        return tf.function(lambda: tf.vectorized_map(unit_fn, units), autograph=False)()
    except (TypeError, ValueError, NotImplementedError) as error:
        warnings.warn(
            "pydp_r: tf.vectorized_map cannot vectorize this model's per-unit gradients "
            f"({type(error).__name__}: {str(error)[:200]}); computing them one unit at a time "
            "with tf.map_fn instead (exact, slower).",
            stacklevel=2,
        )
    unit_specs = tf.nest.map_structure(
        lambda tensor: tf.TensorSpec(tensor.shape[1:], tensor.dtype), units
    )
    traced = tf.function(unit_fn, autograph=False).get_concrete_function(unit_specs)
    output_signature = tf.nest.map_structure(
        lambda tensor: tf.TensorSpec(tensor.shape, tensor.dtype), traced.structured_outputs
    )
    return tf.map_fn(unit_fn, units, fn_output_signature=output_signature)


def _zeroed_where_not(keep: tf.Tensor, tensor: tf.Tensor) -> tf.Tensor:
    """`tensor` with the leading-axis rows where `keep` is false set to zero."""
    shape = tf.concat([tf.shape(keep), tf.ones([tf.rank(tensor) - 1], tf.int32)], 0)
    return tf.where(tf.reshape(keep, shape), tensor, tf.zeros_like(tensor))


def without_non_finite_examples(x: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, Any, Any]:
    """Take examples whose features or targets hold NaN or inf out of a batch.

    Such an example's rows are set to zero and its sample weight to 0, so it adds nothing to
    any loss or clipped gradient (as if its gradient were clipped to zero, within the bound) and
    cannot turn every weight into NaN. Batches with no floating-point tensor pass unchanged.

    Args:
        x, y: Nested structures of tensors with a common leading batch dimension (y may be
            None).
        sample_weight: None or per-example weights, shape `(batch,)` or `(batch, 1)`.

    Returns:
        `(x, y, sample_weight, dropped)`: the cleaned batch, weights (created as ones when none
        were given and a row may need dropping), and the number of examples dropped (int64).
    """
    floats = [
        tensor
        for tensor in tf.nest.flatten((x, y, sample_weight))
        if tensor is not None and tf.as_dtype(tensor.dtype).is_floating
    ]
    if not floats:
        return x, y, sample_weight, tf.constant(0, tf.int64)
    batch_size = tf.shape(floats[0])[0]
    finite = tf.ones([batch_size], tf.bool)
    for tensor in floats:
        flat = tf.reshape(tensor, [batch_size, -1])
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(flat), axis=1))

    def clean(tensor: Any) -> Any:
        if tensor is None or not tf.as_dtype(tensor.dtype).is_floating:
            return tensor
        return _zeroed_where_not(finite, tensor)

    x, y = tf.nest.map_structure(clean, (x, y))
    if sample_weight is None:
        sample_weight = tf.ones([batch_size], tf.float32)
    sample_weight = tf.convert_to_tensor(sample_weight)
    sample_weight = _zeroed_where_not(finite, clean(sample_weight))
    dropped = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    return x, y, sample_weight, dropped
