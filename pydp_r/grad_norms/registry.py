"""Registry of layer types whose per-example gradient norms are computed from activations.

A rule knows one Keras layer type: how to run it while exposing the tensor `z` whose gradient
(per example) determines the layer's parameter gradients, and how to turn the layer input and
that gradient into each example's squared gradient norm without forming the per-example
gradients when that is cheaper ("ghost norms"). Adding a layer type is adding one small module
that registers a rule with `@register(LayerType)`.
"""

from __future__ import annotations

from typing import Any, Protocol

import keras
import tensorflow as tf


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
        `squared_norms` needs besides that gradient (e.g. the layer input).
        """

    def squared_norms(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: int
    ) -> tf.Tensor:
        """Per-unit squared L2 norm of the layer's weight gradients, shape `(num_units,)`.

        `saved` and `z_grad` have the batch as leading dimension; the batch splits into
        `num_units` equal consecutive units (examples or microbatches).
        """


_RULES: dict[type, LayerRule] = {}


def register(*layer_types: type) -> Any:
    """Class decorator registering a rule for exactly these layer types (not their subclasses)."""

    def decorate(rule_class: type) -> type:
        for layer_type in layer_types:
            _RULES[layer_type] = rule_class()
        return rule_class

    return decorate


def rule_for(layer: keras.layers.Layer) -> LayerRule | None:
    """The registered rule for `layer`'s exact type if it supports this instance, else None."""
    rule = _RULES.get(type(layer))
    if rule is not None and rule.supports(layer):
        return rule
    return None


def registered_types() -> tuple[type, ...]:
    """Layer types that have a rule."""
    return tuple(_RULES)


def per_unit(tensor: tf.Tensor, num_units: int) -> tf.Tensor:
    """Reshape `(batch, ..., features)` to `(units, positions, features)`.

    All examples of a unit, and all positions (time steps, pixels) of an example, become one
    axis of positions: a unit's weight gradient is a sum over its positions.
    """
    features = tf.shape(tensor)[-1]
    return tf.reshape(tensor, tf.stack([num_units, -1, features]))


def outer_product_squared_norms(activations: tf.Tensor, z_grads: tf.Tensor) -> tf.Tensor:
    """Per-unit `||sum_t a_t g_t^T||_F^2` for `a` `(units, T, d_in)` and `g` `(units, T, d_out)`.

    Picks by static shape the cheaper of the ghost norm (Gram matrices, cost T^2 (d_in + d_out))
    and materializing the per-unit gradient (cost T d_in d_out).
    """
    positions, d_in, d_out = activations.shape[1], activations.shape[2], z_grads.shape[2]
    if positions == 1:
        return tf.reduce_sum(tf.square(activations), [1, 2]) * tf.reduce_sum(
            tf.square(z_grads), [1, 2]
        )
    use_ghost = (
        positions is not None
        and d_in is not None
        and d_out is not None
        and positions * (d_in + d_out) < d_in * d_out
    )
    if use_ghost:
        activation_gram = tf.linalg.matmul(activations, activations, transpose_b=True)
        grad_gram = tf.linalg.matmul(z_grads, z_grads, transpose_b=True)
        return tf.reduce_sum(activation_gram * grad_gram, [1, 2])
    per_unit_gradient = tf.linalg.matmul(activations, z_grads, transpose_a=True)
    return tf.reduce_sum(tf.square(per_unit_gradient), [1, 2])


def bias_squared_norms(z_grads: tf.Tensor) -> tf.Tensor:
    """Per-unit squared norm of a bias gradient: `||sum_t g_t||^2` for `g` `(units, T, d)`."""
    return tf.reduce_sum(tf.square(tf.reduce_sum(z_grads, axis=1)), axis=1)


def affine_squared_norms(
    activations: tf.Tensor, z_grad: tf.Tensor, num_units: int, has_bias: bool
) -> tf.Tensor:
    """Per-unit squared gradient norm of `z = a W (+ b)` applied at every position.

    Args:
        activations: `a`, shape `(batch, ..., d_in)` (for a convolution, its input patches).
        z_grad: Gradient at `z`, shape `(batch, ..., d_out)`, same positions.
        num_units: Units (examples or microbatches) the batch splits into.
        has_bias: Whether the layer has a bias `b`.
    """
    grads = per_unit(z_grad, num_units)
    norms = outer_product_squared_norms(
        per_unit(tf.cast(activations, z_grad.dtype), num_units), grads
    )
    if has_bias:
        norms += bias_squared_norms(grads)
    return norms
