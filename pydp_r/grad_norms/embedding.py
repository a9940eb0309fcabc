"""Embedding: an example's gradient adds its output gradients at the rows it looked up."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import UnitGradients, per_unit, register


@register(keras.layers.Embedding)
class EmbeddingRule:
    def supports(self, layer: keras.layers.Embedding) -> bool:
        return (
            not getattr(layer, "lora_enabled", False)
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1
        )

    def forward(
        self, layer: keras.layers.Embedding, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        outputs = type(layer).call(layer, inputs)
        return outputs, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Embedding, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        # ||sum_t e_{i_t} g_t^T||^2 = sum_{t,s} [i_t == i_s] g_t . g_s (ghost norm over positions).
        indices = per_unit(tf.cast(saved, tf.int64)[..., tf.newaxis], num_units)[..., 0]
        grads = per_unit(z_grad, num_units)
        same_row = tf.cast(tf.equal(indices[:, :, None], indices[:, None, :]), grads.dtype)
        grad_gram = tf.linalg.matmul(grads, grads, transpose_b=True)
        # Per-example gradients would be (units, vocabulary, dim): never formed.
        return UnitGradients(tf.reduce_sum(same_row * grad_gram, [1, 2]))
