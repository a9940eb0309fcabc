"""Dense: the kernel gradient of an example is `sum_t a_t g_t^T` over its positions."""

from __future__ import annotations

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import (
    bias_squared_norms,
    outer_product_squared_norms,
    per_unit,
    register,
)


@register(keras.layers.Dense)
class DenseRule:
    def supports(self, layer: keras.layers.Dense) -> bool:
        return (
            not getattr(layer, "lora_enabled", False)
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1 + int(layer.bias is not None)
        )

    def forward(
        self, layer: keras.layers.Dense, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = keras.ops.matmul(inputs, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        outputs = layer.activation(z) if layer.activation is not None else z
        return z, outputs, inputs

    def squared_norms(
        self, layer: keras.layers.Dense, saved: tf.Tensor, z_grad: tf.Tensor, num_units: int
    ) -> tf.Tensor:
        activations = per_unit(tf.cast(saved, z_grad.dtype), num_units)
        grads = per_unit(z_grad, num_units)
        norms = outer_product_squared_norms(activations, grads)
        if layer.bias is not None:
            norms += bias_squared_norms(grads)
        return norms
