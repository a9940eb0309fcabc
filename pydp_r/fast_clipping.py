"""Fast per-example clipping for Sequential and functional models built from per-example layers.

One forward pass of the whole batch records, for each layer with trainable weights, the tensor
`z` its weights act on and what its norm rule needs; one backward pass of the summed
per-example losses gives every example's gradient at each `z` (no layer mixes examples, so row
i of that gradient comes from example i alone). Registered layers (`pydp_r.grad_norms`) turn it
into per-example gradient norms, each layer by the cheaper of ghost norms and forming its
per-example gradients; other layers get vectorized per-example gradients of their own weights.
Where per-example gradients were formed, the clipped sum is their clip-factor-weighted sum;
elsewhere the clip factors weight each example's gradient at `z` and one local backward step
gives the clipped sum ("book-keeping", Bu et al. 2022): the cost is close to one ordinary
training step.

Models this cannot handle exactly (subclassed models, layers not known to be per-example, shared
layers, regularization or `add_loss` terms) use `pydp_r.clipping` instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam, grad_norms
from pydp_r._keras_seam import Functional
from pydp_r.clipping import clip_factors, split_into_microbatches, split_units

# The model needs the general per-example path (`pydp_r.clipping`); rules raise it too.
NotSupported = grad_norms.registry.NotSupported


def _operations(model: keras.Model) -> list[Any]:
    """Every operation of a Sequential or functional model: layers, and for functional models
    also the `keras.ops` calls between them (which are not layers)."""
    return list(model.operations) if isinstance(model, Functional) else list(model.layers)


def unsupported_reason(model: keras.Model) -> str | None:
    """Why `model` cannot use the fast path, or None when it can (checked before tracing).

    The fast path is exact only if no operation mixes examples, so every operation of the
    model, nested models included, must be a layer the registry (`pydp_r.grad_norms`) knows to
    be per-example: a functional model's `keras.ops` calls (e.g. a mean over the batch axis)
    disqualify it.
    """
    if type(model) not in (keras.Sequential, Functional):
        return f"{type(model).__name__} is not a Sequential or functional model"
    for operation in _operations(model):
        reason = _layer_unsupported_reason(operation)
        if reason is not None:
            return reason
    return None


def _layer_unsupported_reason(operation: Any) -> str | None:
    if type(operation) in (keras.Sequential, Functional):
        return unsupported_reason(operation)
    kind = grad_norms.per_example_kind(operation)
    if kind is None:
        return (
            f"operation '{operation.name}' ({type(operation).__name__}) is not known to be "
            "per-example (see pydp_r.grad_norms.register_per_example)"
        )
    if kind == grad_norms.SUBLAYERS:
        for sublayer in _keras_seam.direct_sublayers(operation):
            reason = _layer_unsupported_reason(sublayer)
            if reason is not None:
                return reason
    return None


def _weighted_units(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """The layers inside `layer` whose per-example gradients are taken one layer at a time:
    nested models and `through_sublayers` layers are looked into, others taken whole."""
    for sublayer in _keras_seam.direct_sublayers(layer):
        if not sublayer.trainable_weights:
            continue
        if type(sublayer) in (keras.Sequential, Functional) or (
            grad_norms.per_example_kind(sublayer) == grad_norms.SUBLAYERS
        ):
            yield from _weighted_units(sublayer)
        else:
            yield sublayer


@dataclasses.dataclass
class _Record:
    """What one call of a layer with trainable weights left for the backward pass."""

    layer: keras.layers.Layer
    rule: grad_norms.LayerRule | None
    z: tf.Tensor
    saved: Any
    call: Callable[..., Any]
    call_kwargs: dict[str, Any]


def _rule_for(model: keras.Model, layer: keras.layers.Layer) -> grad_norms.LayerRule | None:
    """The layer's rule, except a rule marked `exact_under_xla = False` when the model is
    compiled with XLA (the layer is then vectorized whole, or XLA refuses it)."""
    rule = grad_norms.rule_for(layer)
    if rule is not None and not getattr(rule, "exact_under_xla", True):
        if getattr(model, "jit_compile", False) is True:
            return None
    return rule


@contextlib.contextmanager
def _recording(model: keras.Model, records: list[_Record]) -> Iterator[None]:
    """Temporarily route the calls of every layer with own trainable weights through a recorder."""
    hooked = []
    for layer in _weighted_units(model):
        if any(layer is other for other in hooked):
            continue  # reached twice (a nested model used twice): its second call raises
        rule = _rule_for(model, layer)
        original_call = layer.call

        def hooked_call(inputs, *args, _layer=layer, _rule=rule, _call=original_call, **kwargs):
            if any(record.layer is _layer for record in records):
                raise NotSupported(f"layer '{_layer.name}' is called more than once")
            if args or any(isinstance(value, tf.Tensor) for value in tf.nest.flatten(kwargs)):
                # Tensors besides `inputs` (masks, states) would need splitting per example, and
                # rules see `inputs` alone.
                raise NotSupported(f"layer '{_layer.name}' has tensor inputs besides `inputs`")
            if _rule is not None:
                z, outputs, saved = _rule.forward(_layer, inputs)
                records.append(_Record(_layer, _rule, z, saved, _call, {}))
                return outputs
            outputs = _call(inputs, *args, **kwargs)
            if not isinstance(outputs, tf.Tensor):
                raise NotSupported(f"layer '{_layer.name}' has several outputs")
            records.append(_Record(_layer, None, outputs, inputs, _call, kwargs))
            return outputs

        layer.call = hooked_call
        hooked.append(layer)
    try:
        yield
    finally:
        for layer in hooked:
            del layer.call


def _vectorized_layer_gradients(
    record: _Record, z_grad: tf.Tensor, num_units: tf.Tensor
) -> list[tf.Tensor]:
    """Per-unit gradients of one layer's own weights, the layer vectorized over units."""
    variables = record.layer.trainable_weights
    inputs_units = split_units(record.saved, num_units)
    grad_units = split_units(z_grad, num_units)

    def unit_gradient(unit: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        unit_inputs, unit_grad = unit
        with tf.GradientTape() as tape:
            outputs = record.call(unit_inputs, **record.call_kwargs)
        return tape.gradient(
            outputs, variables, output_gradients=unit_grad, unconnected_gradients="zero"
        )

    return tf.vectorized_map(unit_gradient, (inputs_units, grad_units))


def clipped_gradient_sum(
    model: keras.Model,
    unit_loss: Callable[[Any, Any], tf.Tensor],
    x: Any,
    targets: Any,
    l2_norm_clip: float,
    num_microbatches: int | None = None,
) -> tuple[list[tf.Tensor], tf.Tensor, Any, tf.Tensor]:
    """Same result as `pydp_r.clipping.clipped_gradient_sum` for a supported model, faster.

    Args:
        model: A model for which `unsupported_reason(model)` is None.
        unit_loss: Maps `(unit_targets, unit_predictions)` of one unit (leading dimension
            batch/units) to that unit's mean loss, as computed on that unit alone.
        x: Model inputs for the whole batch.
        targets: Nested structure of tensors the loss needs besides the predictions (targets,
            sample weights), leading dimension the batch.
        l2_norm_clip: Clipping bound C, > 0.
        num_microbatches: None for one unit per example, else a divisor of the batch size.

    Returns:
        `(gradient_sums, unit_losses, predictions, num_units)` as in `pydp_r.clipping`, the
        gradient sums ordered like `model.trainable_weights`.

    Raises:
        NotSupported: When the forward pass shows the model is not supported after all
            (a layer called twice, regularization losses); nothing has been updated then.
    """
    records: list[_Record] = []
    with tf.GradientTape(persistent=True) as tape:
        with _recording(model, records):
            predictions = model(x, training=True)
        if model.losses:
            raise NotSupported("the model has regularization or add_loss terms")
        (unit_targets, unit_predictions), num_units = split_into_microbatches(
            (targets, predictions), num_microbatches
        )
        unit_losses = tf.vectorized_map(
            lambda unit: unit_loss(*unit), (unit_targets, unit_predictions)
        )
        total_loss = tf.reduce_sum(unit_losses)
    z_grads = tape.gradient(total_loss, [record.z for record in records])

    # Rules are told "one unit per example" as None, so they know positions per unit statically.
    rule_units = None if num_microbatches is None else num_units
    squared_norms = tf.zeros(tf.reshape(num_units, [1]), tf.float32)
    unit_gradients: dict[int, list[tf.Tensor]] = {}  # record index -> per-unit weight gradients
    for index, (record, z_grad) in enumerate(zip(records, z_grads, strict=True)):
        if any(g is None for g in tf.nest.flatten(z_grad)):
            continue  # the loss does not depend on this layer
        if record.rule is not None:
            norms, gradients = record.rule.unit_gradients(
                record.layer, record.saved, z_grad, rule_units
            )
        else:
            gradients = _vectorized_layer_gradients(record, z_grad, num_units)
            norms = grad_norms.gradients_squared_norms(gradients)
        if gradients is not None:
            unit_gradients[index] = gradients
        squared_norms += tf.cast(norms, tf.float32)
    factors = clip_factors(squared_norms, l2_norm_clip)

    sums_by_variable: dict[int, tf.Tensor] = {}
    for index, (record, z_grad) in enumerate(zip(records, z_grads, strict=True)):
        if any(g is None for g in tf.nest.flatten(z_grad)):
            continue
        variables = record.layer.trainable_weights
        if index in unit_gradients:
            sums = [
                tf.tensordot(tf.cast(factors, g.dtype), g, axes=1) for g in unit_gradients[index]
            ]
        else:
            weighted = split_units(z_grad, num_units) * tf.reshape(
                tf.cast(factors, z_grad.dtype), tf.concat([[-1], tf.ones_like(tf.shape(z_grad))], 0)
            )
            sums = tape.gradient(
                record.z,
                variables,
                output_gradients=tf.reshape(weighted, tf.shape(z_grad)),
                unconnected_gradients="zero",
            )
        for variable, gradient_sum in zip(variables, sums, strict=True):
            sums_by_variable[id(variable)] = tf.cast(
                tf.convert_to_tensor(gradient_sum), variable.dtype
            )
    del tape

    gradient_sums = [
        sums_by_variable.get(id(variable), tf.zeros_like(variable))
        for variable in model.trainable_weights
    ]
    return gradient_sums, unit_losses, predictions, num_units
