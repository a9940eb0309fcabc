"""Dense: the kernel gradient of an example is `sum_t a_t g_t^T` over its positions."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import UnitGradients, affine_unit_gradients, register


@register(keras.layers.Dense)
class DenseRule:
    def supports(self, layer: keras.layers.Dense) -> bool:
        return (
            not getattr(layer, "lora_enabled", False)
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1 + int(getattr(layer, "bias", None) is not None)
        )

    def forward(
        self, layer: keras.layers.Dense, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = keras.ops.matmul(inputs, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        outputs = layer.activation(z) if layer.activation is not None else z
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Dense, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        return affine_unit_gradients(saved, z_grad, num_units, layer.kernel, layer.bias)
