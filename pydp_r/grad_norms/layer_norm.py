"""LayerNormalization over the last axis: `out = x_hat * gamma + beta`, position by position."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import (
    UnitGradients,
    gradients_squared_norms,
    per_unit,
    register,
)


@register(keras.layers.LayerNormalization)
class LayerNormRule:
    def supports(self, layer: keras.layers.LayerNormalization) -> bool:
        return layer.axis in (-1, [-1]) and not layer.rms_scaling and bool(layer.trainable_weights)

    def forward(
        self, layer: keras.layers.LayerNormalization, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        normalized = keras.ops.layer_normalization(inputs, None, None, -1, layer.epsilon)
        outputs = normalized
        if layer.gamma is not None:
            outputs = outputs * layer.gamma
        if layer.beta is not None:
            outputs = outputs + layer.beta
        outputs = keras.ops.cast(outputs, layer.compute_dtype)
        # The weights act on the output directly; the gamma gradient also needs x_hat.
        return outputs, outputs, normalized

    def unit_gradients(
        self,
        layer: keras.layers.LayerNormalization,
        saved: tf.Tensor,
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        # Per-unit gradients are as small as the weights (units, dim): always formed.
        grads = per_unit(z_grad, num_units)
        gradients = []
        for weight in layer.trainable_weights:
            if weight is layer.gamma:
                normalized = per_unit(tf.cast(saved, grads.dtype), num_units)
                gradients.append(tf.reduce_sum(grads * normalized, axis=1))
            else:
                gradients.append(tf.reduce_sum(grads, axis=1))
        return UnitGradients(gradients_squared_norms(gradients), gradients)


@register(keras.layers.GroupNormalization)
class GroupNormRule:
    """GroupNormalization over the last axis: statistics per example and group, then an affine
    map per channel, so the weights' gradients are LayerNormalization's: an example's gamma
    gradient is `sum_t g_t x_hat_t` over its positions, its beta gradient `sum_t g_t`.

    The forward pass is Keras' own arithmetic, `x * (inv gamma) + (beta - mean inv gamma)`:
    two passes over the input, where forming `x_hat` first and then scaling it took four,
    with their backward passes: 34 ms against 22 ms forward and backward for the 62 x 500 x 64
    inputs of Keras' time-series classifier (benchmarks/README.md). `x_hat` is formed only in
    `unit_gradients`, outside every backward pass, from the saved statistics.
    """

    def supports(self, layer: keras.layers.GroupNormalization) -> bool:
        return layer.axis == -1 and bool(layer.trainable_weights)

    def forward(
        self, layer: keras.layers.GroupNormalization, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        grouped = _grouped(layer, tf.cast(inputs, tf.float32))
        # Statistics over every axis but the batch and the group axis (-2).
        axes = [*range(1, inputs.shape.rank - 1), inputs.shape.rank]
        mean, variance = tf.nn.moments(grouped, axes=axes, keepdims=True)
        inverse_std = tf.math.rsqrt(variance + layer.epsilon)
        scale = inverse_std
        if layer.gamma is not None:
            scale = scale * tf.reshape(tf.cast(layer.gamma, tf.float32), grouped.shape[-2:])
        offset = -mean * scale
        if layer.beta is not None:
            offset = offset + tf.reshape(tf.cast(layer.beta, tf.float32), grouped.shape[-2:])
        outputs = tf.reshape(grouped * scale + offset, tf.shape(inputs))
        outputs = keras.ops.cast(outputs, layer.compute_dtype)
        # The weights act on the output directly; the gamma gradient also needs x_hat.
        return outputs, outputs, (inputs, mean, inverse_std)

    def unit_gradients(
        self,
        layer: keras.layers.GroupNormalization,
        saved: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        inputs, mean, inverse_std = saved
        grads = tf.cast(z_grad, tf.float32)
        spatial_axes = list(range(1, inputs.shape.rank - 1))
        gradients = []
        for weight in layer.trainable_weights:
            if weight is layer.gamma:
                # sum_t g_t (x_t - mean) per example, times that example's 1/std: x_hat is
                # never formed.
                centered = _grouped(layer, tf.cast(inputs, tf.float32)) - mean
                products = _grouped(layer, grads) * centered
                group_inverse_std = tf.reshape(inverse_std, [-1, layer.groups, 1])
                grouped_sums = tf.reduce_sum(products, axis=spatial_axes) * group_inverse_std
                example_sums = tf.reshape(grouped_sums, [-1, grads.shape[-1]])
            else:
                example_sums = tf.reduce_sum(grads, axis=spatial_axes)
            gradients.append(tf.cast(_per_unit_sums(example_sums, num_units), z_grad.dtype))
        return UnitGradients(gradients_squared_norms(gradients), gradients)


def _per_unit_sums(example_values: tf.Tensor, num_units: Any) -> tf.Tensor:
    """`(batch, channels)` per-example values summed over each unit's examples."""
    if num_units is None:
        return example_values
    return tf.reduce_sum(per_unit(example_values[:, tf.newaxis], num_units), axis=1)


def _grouped(layer: keras.layers.GroupNormalization, inputs: tf.Tensor) -> tf.Tensor:
    """`(batch, ..., channels)` as `(batch, ..., groups, channels per group)`."""
    channels = inputs.shape[-1]
    shape = tf.shape(inputs)
    grouped_shape = tf.concat([shape[:-1], [layer.groups, channels // layer.groups]], 0)
    grouped = tf.reshape(inputs, grouped_shape)
    return tf.ensure_shape(grouped, [*inputs.shape[:-1], layer.groups, channels // layer.groups])
