"""Registry of layer types whose per-example gradient norms are computed from activations.

A rule knows one Keras layer type: how to run it while exposing the tensor `z` whose gradient
(per example) determines the layer's parameter gradients, and how to turn the layer input and
that gradient into each example's squared gradient norm, choosing per layer the cheaper of two
ways (mixed ghost clipping): the norm from Gram matrices without forming per-example gradients
("ghost norm"), or forming the per-example gradients, which are then also reused for the
clipped sum instead of a second backward pass. Adding a layer type is adding one small module
that registers a rule with `@register(LayerType)`.

The registry is also the one source of truth for which layers the fast path accepts
(`per_example_kind`): a layer type is eligible when it has a rule (and the rule finds the
instance per-example) or was declared per-example with `register_per_example`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import keras
import tensorflow as tf


class NotSupported(Exception):
    """The model needs the general per-example path (`pydp_r.step.clipping`).

    Raised by the fast path, or by a rule that finds at trace time that it cannot handle a
    call; `pydp_r.step.fast_clipping.NotSupported` is this class.
    """


class UnitGradients(NamedTuple):
    """What a rule computed for one layer call.

    `squared_norms`: per-unit squared L2 norm of the layer's weight gradients, `(num_units,)`.
    `gradients`: None, or the per-unit gradients of `layer.trainable_weights` (in that order,
    each `(num_units, *weight.shape)`) when the rule formed them to get the norms.
    """

    squared_norms: tf.Tensor
    gradients: list[tf.Tensor] | None = None


class LayerRule(Protocol):
    """How to compute per-example squared gradient norms for one layer type."""

    def supports(self, layer: keras.layers.Layer) -> bool:
        """Whether this instance's configuration is covered (else the generic fallback is used)."""

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Run the layer; return `(z, outputs, saved)`.

        `z` is the tensor computed directly from the trainable weights (e.g. the pre-activation),
        so the weights' gradient follows from the gradient at `z` alone; `saved` is what
        `unit_gradients` needs besides that gradient (e.g. the layer input).
        """

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        """Per-unit squared norms of the layer's weight gradients (and the gradients if formed).

        `saved` and `z_grad` have the batch as leading dimension; the batch splits into
        `num_units` (an int32 scalar; None for one unit per example) equal consecutive units
        (examples or microbatches). `per_unit` does that reshape.
        """


_RULES: dict[type, LayerRule] = {}
# Layer type -> whether its weights are reached through its sublayers (see register_per_example).
_PER_EXAMPLE: dict[type, bool] = {}

# What `per_example_kind` answers.
RULE = "rule"  # a rule computes its per-example norms from activations
WHOLE = "whole"  # per-example gradients by vectorizing the layer alone over the batch
SUBLAYERS = "sublayers"  # the layer's own computation has no weights; its sublayers are taken
NOT_PER_EXAMPLE = None


def register(*layer_types: type) -> Any:
    """Class decorator registering a rule for exactly these layer types (not their subclasses).

    A rule may define `is_per_example(layer) -> bool` for types whose instances are not all
    per-example (an EinsumDense equation may contract over the batch axis); without it every
    instance of a registered type is taken to compute each example's output from that example
    alone.
    """

    def decorate(rule_class: type) -> type:
        for layer_type in layer_types:
            _RULES[layer_type] = rule_class()
        return rule_class

    return decorate


def register_per_example(*layer_types: type, through_sublayers: bool = False) -> None:
    """Declare layer types (exactly these, not subclasses) per-example: fast-path eligible.

    Declare a type only if every instance computes each example's outputs from that example's
    inputs alone (no batch statistics, no mixing across the batch axis, which stays axis 0);
    the fast path's clipping is exact only then. Such a layer with trainable weights and no
    rule gets per-example gradients by vectorizing the layer alone over the batch.

    Args:
        *layer_types: Keras layer classes.
        through_sublayers: True for a layer whose weights all belong to sublayers that are
            themselves eligible and each called once on one tensor (e.g. MultiHeadAttention and
            its EinsumDense projections): those sublayers are then handled one by one (by their
            rules) instead of vectorizing the whole layer.

    Raises:
        ValueError: When an element of `layer_types` is not a `keras.layers.Layer` subclass.
    """
    for layer_type in layer_types:
        if not (isinstance(layer_type, type) and issubclass(layer_type, keras.layers.Layer)):
            raise ValueError(
                "register_per_example takes keras.layers.Layer subclasses; received "
                f"layer_types containing {layer_type!r}."
            )
        _PER_EXAMPLE[layer_type] = bool(through_sublayers)
        _TRUSTED.discard(layer_type)


def per_example_kind(layer: Any) -> str | None:
    """How the fast path treats `layer` (exact type), or None when it is not known per-example.

    Returns `RULE` when a registered rule covers this instance, `SUBLAYERS` for a type declared
    with `through_sublayers=True`, `WHOLE` for other eligible layers (declared per-example, or a
    rule's type whose rule does not cover this configuration), None otherwise.
    """
    rule = _RULES.get(type(layer))
    if rule is not None:
        is_per_example = getattr(rule, "is_per_example", None)
        if is_per_example is not None and not is_per_example(layer):
            return NOT_PER_EXAMPLE
        return RULE if rule.supports(layer) else WHOLE
    if type(layer) in _PER_EXAMPLE:
        return SUBLAYERS if _PER_EXAMPLE[type(layer)] else WHOLE
    return NOT_PER_EXAMPLE


def rule_for(layer: keras.layers.Layer) -> LayerRule | None:
    """The registered rule for `layer`'s exact type if it covers this instance, else None."""
    if per_example_kind(layer) == RULE:
        return _RULES[type(layer)]
    return None


def registered_types() -> tuple[type, ...]:
    """Layer types that have a rule."""
    return tuple(_RULES)


def per_example_types() -> tuple[type, ...]:
    """Layer types declared per-example with `register_per_example` (rules' types not included)."""
    return tuple(_PER_EXAMPLE)


def per_unit(tensor: tf.Tensor, num_units: Any) -> tf.Tensor:
    """Reshape `(batch, ..., features)` to `(units, positions, features)`.

    All examples of a unit, and all positions (time steps, pixels) of an example, become one
    axis of positions: a unit's weight gradient is a sum over its positions. `num_units` is an
    int32 scalar, or None for one unit per example; then the number of positions is static
    whenever the example shape is, even if the batch size is not known at trace time.
    """
    features = tensor.shape[-1] if tensor.shape[-1] is not None else tf.shape(tensor)[-1]
    if num_units is None:
        example_shape = tensor.shape[1:-1]
        if example_shape.is_fully_defined():
            return tf.reshape(tensor, [-1, math.prod(example_shape), features])
        num_units = tf.shape(tensor)[0]
    return tf.reshape(tensor, tf.stack([num_units, -1, features]))


def gradients_squared_norms(gradients: list[tf.Tensor]) -> tf.Tensor:
    """Per-unit squared L2 norm over all of a layer's per-unit gradients, each `(units, ...)`."""
    return tf.add_n(
        [tf.reduce_sum(tf.square(g), axis=list(range(1, g.shape.rank))) for g in gradients]
    )


def outer_product_gradients(
    activations: tf.Tensor, z_grads: tf.Tensor, positions_last: bool = False
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Per-unit `||sum_t a_t g_t^T||_F^2` for `a` `(units, T, d_in)` and `g` `(units, T, d_out)`.

    With `positions_last`, `a` is `(units, d_in, T)`. Picks by static shape the cheaper way:
    the ghost norm (Gram matrices, cost T^2 (d_in + d_out)) or forming the per-unit gradient
    `sum_t a_t g_t^T` (cost T d_in d_out; its memory, units * d_in * d_out, is then at most that
    of `a` and `g`). Returns `(squared_norms, gradients)`, gradients `(units, d_in, d_out)` when
    formed, else None. With one position the norm is `||a||^2 ||g||^2` and nothing is formed.
    """
    d_in, positions = activations.shape[1], activations.shape[2]
    if not positions_last:
        positions, d_in = d_in, positions
    d_out = z_grads.shape[2]
    if positions == 1:
        norms = tf.reduce_sum(tf.square(activations), [1, 2]) * tf.reduce_sum(
            tf.square(z_grads), [1, 2]
        )
        return norms, None
    use_ghost = (
        positions is not None
        and d_in is not None
        and d_out is not None
        and positions * (d_in + d_out) < d_in * d_out
    )
    if use_ghost:
        activation_gram = tf.linalg.matmul(
            activations, activations, transpose_a=positions_last, transpose_b=not positions_last
        )
        grad_gram = tf.linalg.matmul(z_grads, z_grads, transpose_b=True)
        return tf.reduce_sum(activation_gram * grad_gram, [1, 2]), None
    if positions_last:
        gradients = tf.linalg.matmul(activations, z_grads)
        return tf.reduce_sum(tf.square(gradients), [1, 2]), gradients
    # g^T a (then transposed) runs about twice as fast on CPU as a^T g for these shapes.
    transposed = tf.linalg.matmul(z_grads, activations, transpose_a=True)
    return tf.reduce_sum(tf.square(transposed), [1, 2]), tf.transpose(transposed, [0, 2, 1])


def affine_unit_gradients(
    activations: tf.Tensor,
    z_grad: tf.Tensor,
    num_units: Any,
    kernel: keras.Variable,
    bias: keras.Variable | None,
) -> UnitGradients:
    """Per-unit squared gradient norms of `z = a W (+ b)` applied at every position.

    Args:
        activations: `a`, shape `(batch, ..., d_in)` (for a convolution, its input patches in
            the kernel's order).
        z_grad: Gradient at `z`, shape `(batch, ..., d_out)`, same positions.
        num_units: Units (microbatches) the batch splits into; None for one per example.
        kernel: `W`; its shape flattens to `(d_in, d_out)`.
        bias: `b`, or None.

    Returns:
        The norms, and the per-unit gradients of `[kernel, bias]` (or `[kernel]`) when they
        were the cheaper way to the norms.
    """
    grads = per_unit(z_grad, num_units)
    norms, kernel_grads = outer_product_gradients(
        per_unit(tf.cast(activations, z_grad.dtype), num_units), grads
    )
    weights, unit_grads = [kernel], [kernel_grads]
    if bias is not None:
        bias_grads = tf.reduce_sum(grads, axis=1)
        norms += tf.reduce_sum(tf.square(bias_grads), axis=1)
        weights.append(bias)
        unit_grads.append(bias_grads)
    if kernel_grads is None:
        return UnitGradients(norms)
    return UnitGradients(
        norms, [tf.reshape(g, [-1, *w.shape]) for g, w in zip(unit_grads, weights, strict=True)]
    )


# --- keras.ops operations between layers ---
#
# A check maps one call of an operation to None when each example's output rows come from that
# example's input rows alone, with the batch kept as axis 0 (given that every graph tensor among
# its arguments has the batch as axis 0), else to the reason it may not.
OperationCheck = Callable[[Any, tuple, dict, list], "str | None"]
_OPERATIONS: dict[str, OperationCheck] = {}


def register_operation(*names: str) -> Callable[[OperationCheck], OperationCheck]:
    """Function decorator registering a per-example check for `keras.ops` operation classes
    (by class name: "Add", "Mean", "Reshape", ...)."""

    def decorate(check: OperationCheck) -> OperationCheck:
        for name in names:
            _OPERATIONS[name] = check
        return check

    return decorate


def registered_operations() -> tuple[str, ...]:
    """Names of the `keras.ops` operation classes with a per-example check."""
    return tuple(_OPERATIONS)


def operation_reason(
    name: str, operation: Any, args: tuple, kwargs: dict, outputs: list
) -> str | None:
    """Why one call of the `keras.ops` operation `name` may mix examples, or None when it is
    per-example (its registered check passes)."""
    check = _OPERATIONS.get(name)
    if check is None:
        return f"operation '{operation.name}' ({name}) is not known to be per-example"
    reason = check(operation, args, kwargs, outputs)
    if reason is None:
        return None
    return f"operation '{operation.name}' ({name}) {reason}"


def is_trusted_declaration(layer: Any) -> bool:
    """Whether `layer`'s type was declared per-example by pydp_r itself (tested here), not by
    a user's `register_per_example` call (a claim checked per instance)."""
    return type(layer) in _TRUSTED


_TRUSTED: set[type] = set()
# Layer type -> a check of one call's arguments (`CallCheck`), for declared types whose
# instances are per-example only on some inputs (an image layer takes a rank-3 tensor as one
# unbatched image).
CallCheck = Callable[[Any, tuple, dict], "str | None"]
_CALL_CHECKS: dict[type, CallCheck] = {}


def declare_known_per_example(
    *layer_types: type, through_sublayers: bool = False, call_check: CallCheck | None = None
) -> None:
    """`register_per_example` for Keras' own layer types whose claim pydp_r's tests check.

    Args:
        *layer_types: Keras layer classes.
        through_sublayers: As in `register_per_example`.
        call_check: None, or `check(layer, args, kwargs)` giving why one call (its arguments
            with `keras.KerasTensor`s, batch axis first) may not be per-example, or None when
            it is; a call whose arguments are not known is then not per-example.
    """
    register_per_example(*layer_types, through_sublayers=through_sublayers)
    _TRUSTED.update(layer_types)
    for layer_type in layer_types:
        if call_check is None:
            _CALL_CHECKS.pop(layer_type, None)
        else:
            _CALL_CHECKS[layer_type] = call_check


def declared_call_reason(layer: Any, args: tuple | None, kwargs: dict | None) -> str | None:
    """Why one call of a declared layer may not be per-example (its type's `call_check`
    refuses the arguments, or they are not known: `args` None), else None."""
    check = _CALL_CHECKS.get(type(layer)) if type(layer) in _PER_EXAMPLE else None
    if check is None:
        return None
    if args is None:
        return "per-example only for some inputs, and this call's inputs are not known"
    return check(layer, args, kwargs or {})
