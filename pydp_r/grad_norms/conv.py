"""Convolutions: the layer rules, and the choice between forming kernel gradients and ghost norms.

Each layer's kernel gradient norms come from the input views its kernel offsets meet
(`conv_views`), by one of two ways: forming the per-example kernel gradients from the shifted
views (`conv_gradients`), or the ghost norms of the patches (`conv_ghost_norms`).
`ghost_is_cheaper` is the cost model between them; inputs with fewer than
`OFFSETS_MIN_IN_CHANNELS` channels, or outputs with fewer than `OFFSETS_MIN_POSITIONS`
positions, always use patches (ghost norms or formed gradients, by Dense's rule). Measurements
behind these choices: benchmarks/README.md, "Convolution rules".

A transposed convolution's kernel gradient is a convolution's with the roles of its input and
output gradient swapped. Depthwise convolutions always form their (small) per-example kernel
gradients; a separable convolution is a depthwise one followed by a 1x1 convolution, whose
gradient is an outer product per position (Dense's rule).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam
from pydp_r.grad_norms.conv_ghost_norms import patch_kernel_gradients
from pydp_r.grad_norms.conv_gradients import (
    depthwise_kernel_gradients,
    folded_single_channel_gradients,
    offset_kernel_gradients,
)
from pydp_r.grad_norms.conv_views import static_spatial_sizes
from pydp_r.grad_norms.registry import UnitGradients, affine_unit_gradients, per_unit, register

# Thresholds below which per-offset products are too thin to run fast (benchmarks/README.md,
# "Convolution rules": TF Privacy's MNIST convnet).
OFFSETS_MIN_IN_CHANNELS = 8
OFFSETS_MIN_POSITIONS = 64

# Multiply-adds of a batched matrix product that copying one patch element costs
# (benchmarks/README.md, "Convolution rules").
PATCH_ELEMENT_COST = 40


def ghost_is_cheaper(
    positions: int | None, kernel_positions: int, in_channels: int, out_channels: int
) -> bool:
    """Whether ghost norms from patches cost less than forming per-example kernel gradients.

    Args:
        positions: Output positions per unit (None if unknown: then forming, whose cost is
            linear in positions).
        kernel_positions: Product of the kernel's spatial sizes.
        in_channels: Input channels; `kernel_positions * in_channels` is a patch's length.
        out_channels: Output channels.

    Returns:
        True when `positions^2 (d_in + d_out) + PATCH_ELEMENT_COST positions d_in` (Gram
        matrices plus unfolding) is below `positions d_in d_out` (the formed gradients).
    """
    if positions is None:
        return False
    d_in = kernel_positions * in_channels
    ghost = positions * positions * (d_in + out_channels) + PATCH_ELEMENT_COST * positions * d_in
    return ghost < positions * d_in * out_channels


def _kernel_gradients(
    layer: keras.layers.Layer,
    views_of: tf.Tensor,
    meets: tf.Tensor,
    output_spatial: list[int] | None,
    num_units: Any,
) -> UnitGradients:
    """Per-unit squared norms of a convolution's kernel gradient (and the gradients if formed).

    The kernel gradient at offset `o` is `sum_t views_of[t * stride + o * dilation] meets_t^T`
    over the positions `t` of `meets` (`output_spatial`, None when unknown at trace time): for
    a convolution `views_of` is its input and `meets` the gradient at its output; for a
    transposed convolution the two swap.
    """
    if _one_channel_meets(layer, meets):
        return folded_single_channel_gradients(layer, views_of, meets, num_units)
    grads = per_unit(meets, num_units)  # (units, positions, channels of `meets`)
    if output_spatial is None:
        return patch_kernel_gradients(layer, views_of, grads, output_spatial, num_units)
    in_channels, out_channels = views_of.shape[-1], meets.shape[-1]
    if (
        ghost_is_cheaper(grads.shape[1], math.prod(layer.kernel_size), in_channels, out_channels)
        or in_channels < OFFSETS_MIN_IN_CHANNELS
        or math.prod(output_spatial) < OFFSETS_MIN_POSITIONS
    ):
        return patch_kernel_gradients(layer, views_of, grads, output_spatial, num_units)
    return offset_kernel_gradients(layer, views_of, grads, output_spatial, num_units)


def _one_channel_meets(layer: keras.layers.Layer, meets: tf.Tensor) -> bool:
    """Whether the kernel gradients come from one depthwise filter gradient
    (`conv_gradients.folded_single_channel_gradients`): `meets` has one channel, the layer is
    1-D or 2-D, undilated, with "valid" or "same" padding, and the sizes are known."""
    return (
        meets.shape[-1] == 1
        and not _keras_seam.in_xla_context()  # XLA expands the folded groups into a dense mask
        and layer.rank in (1, 2)
        and all(d == 1 for d in layer.dilation_rate)
        and layer.padding in ("valid", "same")
        and meets.shape[1:].is_fully_defined()
    )


def _concatenated(parts: list[UnitGradients]) -> UnitGradients:
    """One layer's result from its weights' parts, in the order of `layer.trainable_weights`:
    the norms add; the gradients are kept only when every part formed its own (else the
    clipped sum comes from a second backward pass)."""
    norms = tf.add_n([part.squared_norms for part in parts])
    if any(part.gradients is None for part in parts):
        return UnitGradients(norms)
    return UnitGradients(norms, [g for part in parts for g in part.gradients])


def _with_bias(
    layer: keras.layers.Layer, kernel: UnitGradients, z_grad: tf.Tensor, num_units: Any
) -> UnitGradients:
    """`kernel`'s result with the bias gradient (the gradient at the output summed over each
    unit's positions) after it, when the layer has a bias."""
    if not layer.use_bias:
        return kernel
    bias_grads = tf.reduce_sum(per_unit(z_grad, num_units), axis=1)
    bias = UnitGradients(tf.reduce_sum(tf.square(bias_grads), axis=1), [bias_grads])
    return _concatenated([kernel, bias])


class _ConvolutionRule:
    """What the convolution rules share: `forward` is the convolution proper (`convolved`),
    then the bias and the activation; `z` is the output before the activation."""

    def convolved(self, layer: keras.layers.Layer, inputs: tf.Tensor) -> tuple[tf.Tensor, Any]:
        """The layer's output before bias and activation, and what `unit_gradients` needs."""
        raise NotImplementedError

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, Any]:
        z, saved = self.convolved(layer, inputs)
        if layer.use_bias:
            z = keras.ops.add(z, layer.bias)
        outputs = layer.activation(z) if layer.activation is not None else z
        return z, outputs, saved


@register(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvRule(_ConvolutionRule):
    def supports(self, layer: keras.layers.Layer) -> bool:
        return (
            layer.groups == 1
            and layer.data_format == "channels_last"
            and getattr(layer, "quantization_mode", None) is None
            and getattr(layer, "lora_enabled", False) is False
            and len(layer.trainable_weights) == 1 + int(layer.use_bias)
        )

    def convolved(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        padding = layer.padding
        if padding == "causal":  # explicit, so that the views see the padded input
            inputs, padding = keras.ops.pad(inputs, _keras_seam.causal_padding(layer)), "valid"
        z = keras.ops.conv(
            inputs,
            layer.kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        return z, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        inputs = tf.cast(saved, z_grad.dtype)
        kernel = _kernel_gradients(layer, inputs, z_grad, static_spatial_sizes(z_grad), num_units)
        return _with_bias(layer, kernel, z_grad, num_units)


@register(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
class ConvTransposeRule(_ConvolutionRule):
    """A transposed convolution is the input gradient of a convolution with the same kernel,
    strides, padding and dilation, from its output space to its input space. So its kernel
    gradient is that convolution's kernel gradient with the roles swapped: views of the
    gradient at the output meet the layer's input. The kernel's layout `(k..., filters,
    in_channels)` is the convolution's `(k..., in, out)`."""

    def supports(self, layer: keras.layers.Layer) -> bool:
        return (
            layer.data_format == "channels_last"
            and layer.padding in ("valid", "same")
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1 + int(layer.use_bias)
        )

    def convolved(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        z = keras.ops.conv_transpose(
            inputs,
            layer.kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        return z, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        inputs = tf.cast(saved, z_grad.dtype)
        kernel = _kernel_gradients(layer, z_grad, inputs, static_spatial_sizes(inputs), num_units)
        return _with_bias(layer, kernel, z_grad, num_units)


def _depthwise_supported(layer: keras.layers.Layer) -> bool:
    return (
        layer.data_format == "channels_last"
        and layer.padding in ("valid", "same")
        and getattr(layer, "quantization_mode", None) is None
    )


def _depthwise_convolved(
    layer: keras.layers.Layer, inputs: tf.Tensor, kernel: keras.Variable
) -> tf.Tensor:
    return keras.ops.depthwise_conv(
        inputs,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


@register(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseConvRule(_ConvolutionRule):
    def supports(self, layer: keras.layers.Layer) -> bool:
        return _depthwise_supported(layer) and len(layer.trainable_weights) == 1 + int(
            layer.use_bias
        )

    def convolved(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        return _depthwise_convolved(layer, inputs, layer.kernel), inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        inputs = tf.cast(saved, z_grad.dtype)
        kernel = depthwise_kernel_gradients(layer, inputs, z_grad, num_units, layer.kernel)
        return _with_bias(layer, kernel, z_grad, num_units)


@register(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableConvRule(_ConvolutionRule):
    def supports(self, layer: keras.layers.Layer) -> bool:
        return _depthwise_supported(layer) and len(layer.trainable_weights) == 2 + int(
            layer.use_bias
        )

    def convolved(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        depthwise = _depthwise_convolved(layer, inputs, layer.depthwise_kernel)
        z = keras.ops.matmul(depthwise, _pointwise_matrix(layer))
        return z, (inputs, depthwise)

    def unit_gradients(
        self,
        layer: keras.layers.Layer,
        saved: tuple[tf.Tensor, tf.Tensor],
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        inputs, depthwise = (tf.cast(t, z_grad.dtype) for t in saved)
        pointwise = tf.cast(_pointwise_matrix(layer), z_grad.dtype)
        depthwise_grad = tf.linalg.matmul(z_grad, pointwise, transpose_b=True)
        depthwise_kernel = depthwise_kernel_gradients(
            layer, inputs, depthwise_grad, num_units, layer.depthwise_kernel
        )
        bias = layer.bias if layer.use_bias else None
        pointwise_and_bias = affine_unit_gradients(
            depthwise, z_grad, num_units, layer.pointwise_kernel, bias
        )
        return _concatenated([depthwise_kernel, pointwise_and_bias])


def _pointwise_matrix(layer: keras.layers.Layer) -> tf.Tensor:
    """A separable convolution's 1x1 kernel as its `(depthwise channels, filters)` matrix."""
    return tf.reshape(layer.pointwise_kernel, layer.pointwise_kernel.shape[-2:])
