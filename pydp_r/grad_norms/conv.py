"""Conv1D/Conv2D: unfold the input into patches, then a patch acts like a Dense input."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam
from pydp_r.grad_norms.registry import UnitGradients, affine_unit_gradients, register


def _patches(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """Input patches `(batch, out_positions..., kernel_size * in_channels)` in kernel order.

    `inputs` is what the convolution saw: for causal padding, the already left-padded input.
    """
    if layer.rank == 1:
        images = inputs[:, tf.newaxis]  # (batch, 1, length, channels)
        sizes = [1, 1, layer.kernel_size[0], 1]
        strides = [1, 1, layer.strides[0], 1]
        rates = [1, 1, layer.dilation_rate[0], 1]
    else:
        images = inputs
        sizes = [1, *layer.kernel_size, 1]
        strides = [1, *layer.strides, 1]
        rates = [1, *layer.dilation_rate, 1]
    padding = "VALID" if layer.padding == "causal" else layer.padding.upper()
    return tf.image.extract_patches(images, sizes, strides, rates, padding)


@register(keras.layers.Conv1D, keras.layers.Conv2D)
class ConvRule:
    def supports(self, layer: keras.layers.Layer) -> bool:
        return (
            layer.groups == 1
            and layer.data_format == "channels_last"
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1 + int(layer.use_bias)
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        padding = layer.padding
        if padding == "causal":
            inputs = keras.ops.pad(inputs, _keras_seam.causal_padding(layer))
            padding = "valid"
        z = keras.ops.conv(
            inputs,
            layer.kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        if layer.use_bias:
            z = keras.ops.add(z, layer.bias)
        outputs = layer.activation(z) if layer.activation is not None else z
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        patches = _patches(layer, tf.cast(saved, z_grad.dtype))
        return affine_unit_gradients(patches, z_grad, num_units, layer.kernel, layer.bias)
