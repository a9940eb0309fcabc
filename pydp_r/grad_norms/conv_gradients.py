"""Per-example (per-unit) kernel gradients of convolutions, formed from the input views.

For kernel offset `o` the kernel gradient of one example is `sum_t view_o[t] g_t^T` over output
positions `t`, where `view_o` is the offset's input view (`conv_views.shifted_views`) and `g`
the gradient at the output: one batched matrix product per offset, so all examples' gradients
take the multiply-adds of the batch's own kernel gradient. A depthwise convolution keeps channels
apart, so its per-example gradients come from one filter gradient with the batch folded into
the channels.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam
from pydp_r.grad_norms.conv_views import shifted_views, static_spatial_sizes
from pydp_r.grad_norms.registry import (
    NotSupported,
    UnitGradients,
    gradients_squared_norms,
    per_unit,
)


def offset_kernel_gradients(
    layer: keras.layers.Layer,
    views_of: tf.Tensor,
    grads: tf.Tensor,
    output_spatial: list[int],
    num_units: Any,
) -> UnitGradients:
    """Per-unit kernel gradients, one matrix product per kernel offset.

    Args:
        layer: The convolution whose kernel `(k..., d_in, d_out)` the gradients are for.
        views_of: `(batch, *spatial, d_in)`, the tensor whose views the offsets take.
        grads: `(units, positions, d_out)`, what the views meet per unit (`per_unit`).
        output_spatial: The spatial sizes of `grads`' positions per example.
        num_units: Units the batch splits into; None for one per example.

    Returns:
        The squared norms and the gradients `[(units, k..., d_in, d_out)]`.
    """
    views = shifted_views(layer, views_of, output_spatial)
    products: list[tf.Tensor] = []
    for _ in range(math.prod(layer.kernel_size)):
        # Memory: the next view is built only once the previous product is computed, so that
        # one view at a time is alive (all at once would hold kernel-size copies of the input).
        # `shifted_views` builds a view when advanced to it, so its operations get this control
        # dependency.
        with tf.control_dependencies(products[-1:]):
            view = next(views)
        products.append(tf.linalg.matmul(per_unit(view, num_units), grads, transpose_a=True))
    kernel_grads = tf.reshape(tf.stack(products, axis=1), [-1, *layer.kernel.shape])
    return UnitGradients(gradients_squared_norms([kernel_grads]), [kernel_grads])


def depthwise_kernel_gradients(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    z_grad: tf.Tensor,
    num_units: Any,
    kernel: keras.Variable,
) -> UnitGradients:
    """Per-unit gradients of a depthwise kernel `(k..., in_channels, multiplier)`.

    Args:
        layer: The depthwise (or separable) convolution.
        inputs: What the depthwise convolution saw, `(batch, *spatial, in_channels)`.
        z_grad: The gradient at its output, `(batch, *output_spatial, in_channels *
            multiplier)`.
        num_units: Units the batch splits into; None for one per example.
        kernel: The depthwise kernel.

    Returns:
        The squared norms and the gradients `[(units, *kernel.shape)]`.

    Raises:
        NotSupported: When the output sizes are unknown at trace time.
    """
    output_spatial = static_spatial_sizes(z_grad)
    if output_spatial is None:
        raise NotSupported(f"layer '{layer.name}' has output sizes unknown at trace time")
    # XLA lowers the folded filter gradient (batch x channels groups) through a dense
    # (batch x channels)^2 mask per offset: 1 TiB for Keras' Xception-like example at batch 173.
    if all(d == 1 for d in layer.dilation_rate) and not _keras_seam.in_xla_context():
        per_example = _folded_depthwise_gradients(layer, inputs, z_grad, kernel)
    else:  # the native filter gradient takes no dilation on CPU
        per_example = _depthwise_gradients_from_views(layer, inputs, z_grad, output_spatial, kernel)
    kernel_grads = _sum_per_unit(per_example, num_units)
    return UnitGradients(gradients_squared_norms([kernel_grads]), [kernel_grads])


def folded_single_channel_gradients(
    layer: keras.layers.Layer, views_of: tf.Tensor, meets: tf.Tensor, num_units: Any
) -> UnitGradients:
    """Per-unit kernel gradients `(units, k..., d_in, 1)` when `meets` has one channel.

    Then the kernel gradient at offset `o` and channel `c` is `sum_t views_of[t * stride + o,
    c] meets_t`: channel `c` of `views_of` meets the same one-channel tensor, which is a
    depthwise filter gradient with `meets` repeated over the `d_in` channels, one example per
    group of channels (`_folded_depthwise_gradients`). One matrix product per offset would
    multiply `(positions x d_in)` by a vector per example: for the last layer of Keras'
    convolutional autoencoder (32 -> 1 channel, 28 x 28, batch 185) 34 ms against 9.8 ms
    here (6.9 ms for the batch's own filter gradient; benchmarks/README.md).

    Args:
        layer: A 1-D or 2-D, undilated convolution (or transposed convolution: then `views_of`
            is the gradient at its output and `meets` its input), "valid" or "same" padding.
        views_of: `(batch, *spatial, d_in)`.
        meets: `(batch, *output_spatial, 1)`.
        num_units: Units the batch splits into; None for one per example.

    Returns:
        The squared norms and the gradients `[(units, *layer.kernel.shape)]`.
    """
    repeated = tf.broadcast_to(meets, tf.concat([tf.shape(meets)[:-1], tf.shape(views_of)[-1:]], 0))
    per_example = _folded_depthwise_gradients(layer, views_of, repeated, layer.kernel)
    kernel_grads = _sum_per_unit(per_example, num_units)
    return UnitGradients(gradients_squared_norms([kernel_grads]), [kernel_grads])


def _folded_depthwise_gradients(
    layer: keras.layers.Layer, inputs: tf.Tensor, z_grad: tf.Tensor, kernel: keras.Variable
) -> tf.Tensor:
    """Per-example depthwise kernel gradients `(batch, *kernel.shape)` from one depthwise
    filter gradient with the batch folded into the channels (the convolution keeps channels
    apart, so examples stay apart too)."""
    if layer.rank == 1:
        inputs, z_grad = inputs[:, tf.newaxis], z_grad[:, tf.newaxis]
        kernel_size, strides = [1, *layer.kernel_size], [1, 1, layer.strides[0], 1]
    else:
        kernel_size, strides = list(layer.kernel_size), [1, *layer.strides, 1]
    in_channels, multiplier = kernel.shape[-2], kernel.shape[-1]

    def fold(tensor: tf.Tensor) -> tf.Tensor:  # (batch, h, w, c) -> (1, h, w, batch * c)
        shape = tf.shape(tensor)
        folded = tf.reshape(tf.transpose(tensor, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
        return tf.ensure_shape(folded, [1, tensor.shape[1], tensor.shape[2], None])

    batch = tf.shape(inputs)[0]
    filter_gradient = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=fold(inputs),
        filter_sizes=tf.stack([*kernel_size, batch * in_channels, multiplier]),
        out_backprop=fold(z_grad),
        strides=strides,
        padding=layer.padding.upper(),
    )
    per_example = tf.reshape(filter_gradient, [*kernel_size, -1, in_channels, multiplier])
    per_example = tf.transpose(per_example, [2, 0, 1, 3, 4])
    return tf.reshape(per_example, [-1, *kernel.shape])


def _depthwise_gradients_from_views(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    z_grad: tf.Tensor,
    output_spatial: list[int],
    kernel: keras.Variable,
) -> tf.Tensor:
    """Per-example depthwise kernel gradients `(batch, *kernel.shape)`: per kernel offset, its
    input view times the output gradient, summed over positions, channel by channel."""
    in_channels, multiplier = kernel.shape[-2], kernel.shape[-1]
    grads = tf.reshape(z_grad, [-1, *output_spatial, in_channels, multiplier])
    spatial_axes = list(range(1, 1 + len(output_spatial)))
    per_offset = [
        tf.reduce_sum(view[..., tf.newaxis] * grads, axis=spatial_axes)
        for view in shifted_views(layer, inputs, output_spatial)
    ]
    return tf.reshape(tf.stack(per_offset, axis=1), [-1, *kernel.shape])


def _sum_per_unit(per_example: tf.Tensor, num_units: Any) -> tf.Tensor:
    """`(batch, ...)` per-example values summed over each unit's examples: `(units, ...)`."""
    if num_units is None:
        return per_example
    shape = tf.shape(per_example)
    return tf.reduce_sum(tf.reshape(per_example, tf.concat([[num_units, -1], shape[1:]], 0)), 1)
