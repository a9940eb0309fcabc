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
    map per channel, so the weights' gradients are LayerNormalization's."""

    def supports(self, layer: keras.layers.GroupNormalization) -> bool:
        return layer.axis == -1 and bool(layer.trainable_weights)

    def forward(
        self, layer: keras.layers.GroupNormalization, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        channels = inputs.shape[-1]
        shape = tf.shape(inputs)
        grouped_shape = tf.concat([shape[:-1], [layer.groups, channels // layer.groups]], 0)
        grouped = tf.cast(tf.reshape(inputs, grouped_shape), tf.float32)
        # Statistics over every axis but the batch and the group axis (-2).
        axes = [*range(1, inputs.shape.rank - 1), inputs.shape.rank]
        mean, variance = tf.nn.moments(grouped, axes=axes, keepdims=True)
        normalized = (grouped - mean) * tf.math.rsqrt(variance + layer.epsilon)
        normalized = tf.reshape(tf.cast(normalized, inputs.dtype), shape)
        outputs = normalized
        if layer.gamma is not None:
            outputs = outputs * tf.cast(layer.gamma, outputs.dtype)
        if layer.beta is not None:
            outputs = outputs + tf.cast(layer.beta, outputs.dtype)
        outputs = keras.ops.cast(outputs, layer.compute_dtype)
        return outputs, outputs, normalized

    def unit_gradients(
        self,
        layer: keras.layers.GroupNormalization,
        saved: tf.Tensor,
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        return LayerNormRule().unit_gradients(layer, saved, z_grad, num_units)
