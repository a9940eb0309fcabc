"""Convolutions: per-example kernel gradients from shifted input views, or ghost norms of patches.

For kernel offset `o` the kernel gradient of one example is `sum_t x[t * stride + o * dilation]
g_t^T` over output positions `t`: one view of the (padded) input and one batched matrix product
per offset, so per-example gradients cost about what the batch's own kernel gradient costs.
Strided views are plain slices of the input reshaped by the strides (see `_shifted_views`), not
strided slices, which are an order of magnitude slower on CPU. The alternative, ghost norms from
patches (the views side by side), is cheaper only for small output maps with wide kernels.
`ghost_is_cheaper` is the cost model. Inputs with fewer than `OFFSETS_MIN_IN_CHANNELS`
channels, or outputs with fewer than `OFFSETS_MIN_POSITIONS` positions, use patches (ghost norms
or formed gradients, by Dense's rule): their offsets' products are too thin to run fast.
Forming the gradients per example by a convolution with
the batch folded into channel groups was measured and not used: on a 2-core CPU it took 2.5x as
long as the shifted views (batch 128, 32x32x32 -> 32 channels, 3x3: 148-183 ms vs 60 ms).

Depthwise convolutions use the same shifted views; a separable convolution is a depthwise one
followed by a 1x1 convolution, whose gradient is an outer product per position.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam
from pydp_r.grad_norms.registry import (
    NotSupported,
    UnitGradients,
    gradients_squared_norms,
    outer_product_gradients,
    per_unit,
    register,
)

# Below this many input channels each offset's product is too thin (e.g. 1 x positions times
# positions x filters per example) and the kernel-positions products run one after another:
# TF Privacy's MNIST convnet's first layer (8x8 kernel, 1 channel) took 3.7x a plain step
# that way, against 1.2-1.3x with patches.
OFFSETS_MIN_IN_CHANNELS = 8
# Below this many output positions per example the per-offset operations' fixed cost dominates:
# its second layer (4x4 kernel, 16 channels, 5x5 outputs) took 3.3x a plain step that way.
OFFSETS_MIN_POSITIONS = 64

# Copying one patch element costs about as much as this many multiply-adds of a batched matrix
# product (25-60, measured with the concatenated views on a 2-core x86 CPU, TF 2.21).
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


def _patch_outer_products(
    layer: keras.layers.Layer,
    views_of: tf.Tensor,
    grads: tf.Tensor,
    output_spatial: list[int] | None,
    num_units: Any,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """`outer_product_gradients` of the patches of `views_of` and `grads` `(units, positions,
    channels)`: per-unit squared norms, and the kernel gradients when formed.

    With the output sizes known, the patches are formed channels first, `(units, kernel_size *
    in_channels, positions)`: the views of the input transposed once, stacked offset-major, meet
    `grads` in one matrix product (on CPU 2-3.5x faster for thin inputs than patches channels
    last, which are 5x faster than `tf.image.extract_patches`). Otherwise `extract_patches`.
    """
    if output_spatial is None:
        if layer.rank == 3:
            raise NotSupported(f"layer '{layer.name}' has output sizes unknown at trace time")
        return outer_product_gradients(
            per_unit(_extracted_patches(layer, views_of), num_units), grads
        )
    rank = len(output_spatial)
    channels_first = tf.transpose(views_of, [0, rank + 1, *range(1, rank + 1)])
    views = list(_shifted_views(layer, channels_first, output_spatial, channels_first=True))
    features, positions = len(views) * views_of.shape[-1], math.prod(output_spatial)
    patches = tf.reshape(tf.stack(views, axis=1), [-1, features, positions])
    if num_units is not None:  # a unit's positions are its examples' positions in turn
        patches = tf.reshape(patches, tf.stack([num_units, -1, features, positions]))
        patches = tf.reshape(
            tf.transpose(patches, [0, 2, 1, 3]), tf.stack([num_units, features, -1])
        )
    return outer_product_gradients(patches, grads, positions_last=True)


def _extracted_patches(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """`tf.image.extract_patches` of a 1-D or 2-D convolution's input, `(batch, *output_spatial,
    kernel_size * in_channels)`; `inputs` is what the convolution saw (for causal padding, the
    already left-padded input)."""
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


def _shifted_views(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    output_spatial: list[int],
    after: list[tf.Tensor] | None = None,
    channels_first: bool = False,
) -> Iterator[tf.Tensor]:
    """For each kernel offset (row-major over the kernel's spatial axes), the input view it
    meets at every output position, `(batch, *output_spatial, in_channels)` (with
    `channels_first`, `inputs` and views are `(batch, in_channels, *spatial)`).

    Strided views are plain slices of the input with each spatial axis split into `(n / s, s)`:
    a strided `tf.strided_slice` is ~15x slower on CPU. With `after`, a list the caller appends
    to between views, each view is computed only once the last element then in `after` has
    been (control dependency).
    """
    first = 2 if channels_first else 1  # the first spatial axis

    def around(spatial: list[Any], fill: Any) -> list[Any]:
        return [*[fill] * first, *spatial, *([] if channels_first else [fill])]

    rank = len(output_spatial)
    strides = list(layer.strides)
    paddings = [[0, 0]] * rank
    if layer.padding == "same":
        paddings = []
        for size, out, kernel, stride, dilation in zip(
            inputs.shape[first : first + rank],
            output_spatial,
            layer.kernel_size,
            strides,
            layer.dilation_rate,
            strict=True,
        ):
            total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
            paddings.append([total // 2, total - total // 2])
    strided = any(s > 1 for s in strides)
    split = None
    if strided:
        inputs = tf.pad(inputs, around(paddings, [0, 0])) if layer.padding == "same" else inputs
        paddings = [[0, 0]] * rank
        sizes = inputs.shape[first : first + rank]
        if sizes.is_fully_defined():
            # Zero-padded at the end to multiples of the strides, each spatial axis n becomes
            # (n / s, s): a strided view is then a slice of the outer axes at one inner index.
            extra = [(-size) % stride for size, stride in zip(sizes, strides, strict=True)]
            if any(extra):
                inputs = tf.pad(inputs, around([[0, e] for e in extra], [0, 0]))
            split_sizes = [
                axis
                for size, e, stride in zip(sizes, extra, strides, strict=True)
                for axis in ((size + e) // stride, stride)
            ]
            split = tf.reshape(
                inputs, [-1, *inputs.shape[1:first], *split_sizes, *inputs.shape[first + rank :]]
            )
    # Unstrided views are padded one at a time: a padded copy of the whole input would live
    # as long as the views do.
    sizes = inputs.shape[first : first + rank]
    for offset in itertools.product(*(range(k) for k in layer.kernel_size)):
        index: list[Any] = []
        view_paddings = []
        for o, d, out, stride, (before, _), size in zip(
            offset, layer.dilation_rate, output_spatial, strides, paddings, sizes, strict=True
        ):
            start = o * d - before
            if split is not None:
                outer, inner = divmod(start, stride)
                index += [slice(outer, outer + out), inner]
            elif strided:
                index.append(slice(start, start + (out - 1) * stride + 1, stride))
            else:
                stop = start + out
                low, high = max(start, 0), stop if size is None else min(stop, size)
                index.append(slice(low, high))
                view_paddings.append([low - start, stop - high])
        with tf.control_dependencies(after[-1:] if after else []):
            view = (inputs if split is None else split)[tuple(around(index, slice(None)))]
            if any(amount for pair in view_paddings for amount in pair):
                view = tf.pad(view, around(view_paddings, [0, 0]))
            yield view


def _offset_products(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    grads: tf.Tensor,
    output_spatial: list[int],
    num_units: Any,
) -> list[tf.Tensor]:
    """Per kernel offset, the per-unit `(units, in_channels, out_channels)` kernel gradient.

    Each offset's input view is made only after the previous offset's product, so that one
    view at a time is alive (all of them at once would hold kernel-size copies of the input).
    """
    products: list[tf.Tensor] = []
    for view in _shifted_views(layer, inputs, output_spatial, products):
        products.append(tf.linalg.matmul(per_unit(view, num_units), grads, transpose_a=True))
    return products


def _static_spatial(tensor: tf.Tensor) -> list[int] | None:
    spatial = tensor.shape[1:-1]
    return list(spatial) if spatial.is_fully_defined() else None


def _conv_inputs(layer: keras.layers.Layer, inputs: tf.Tensor) -> tuple[tf.Tensor, str]:
    """The input the convolution proper sees and its padding (causal becomes explicit)."""
    if layer.padding == "causal":
        return keras.ops.pad(inputs, _keras_seam.causal_padding(layer)), "valid"
    return inputs, layer.padding


def _biased_and_activated(layer: keras.layers.Layer, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(z + bias, activation(z + bias))` for a convolution layer's pre-bias output `z`."""
    if layer.use_bias:
        z = keras.ops.add(z, layer.bias)
    return z, layer.activation(z) if layer.activation is not None else z


def _bias_gradients(grads: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(grads, axis=1)


@register(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvRule:
    def supports(self, layer: keras.layers.Layer) -> bool:
        return (
            layer.groups == 1
            and layer.data_format == "channels_last"
            and getattr(layer, "quantization_mode", None) is None
            and getattr(layer, "lora_enabled", False) is False
            and len(layer.trainable_weights) == 1 + int(layer.use_bias)
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        inputs, padding = _conv_inputs(layer, inputs)
        z = keras.ops.conv(
            inputs,
            layer.kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        z, outputs = _biased_and_activated(layer, z)
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        norms, kernel_grads = _kernel_gradients(
            layer, tf.cast(saved, z_grad.dtype), z_grad, _static_spatial(z_grad), num_units
        )
        return _with_bias(layer, norms, kernel_grads, per_unit(z_grad, num_units))


def _kernel_gradients(
    layer: keras.layers.Layer,
    views_of: tf.Tensor,
    meets: tf.Tensor,
    output_spatial: list[int] | None,
    num_units: Any,
) -> tuple[tf.Tensor | None, tf.Tensor | None]:
    """Per-unit kernel gradient of a convolution, or only its squared norm.

    The kernel gradient at offset `o` is `sum_t views_of[t * stride + o * dilation] meets_t^T`
    over the positions `t` of `meets` (`output_spatial`): for a convolution `views_of` is its
    input and `meets` the gradient at its output; for a transposed convolution the two swap.
    Picks by `ghost_is_cheaper` and the offsets thresholds between shifted views (formed) and
    patches (ghost norm or formed, by Dense's rule). Returns `(squared_norms, None)` or
    `(None, gradients (units, *layer.kernel.shape))`.
    """
    grads = per_unit(meets, num_units)  # (units, positions, channels of `meets`)
    kernel_positions = math.prod(layer.kernel_size)
    in_channels, out_channels = views_of.shape[-1], meets.shape[-1]
    ghost = output_spatial is not None and ghost_is_cheaper(
        grads.shape[1], kernel_positions, in_channels, out_channels
    )
    use_offsets = (
        output_spatial is not None
        and not ghost
        and in_channels >= OFFSETS_MIN_IN_CHANNELS
        and math.prod(output_spatial) >= OFFSETS_MIN_POSITIONS
    )
    if not use_offsets:
        norms, kernel_grads = _patch_outer_products(
            layer, views_of, grads, output_spatial, num_units
        )
        if kernel_grads is None:
            return norms, None
    else:
        kernel_grads = tf.stack(
            _offset_products(layer, views_of, grads, output_spatial, num_units), axis=1
        )
    return None, tf.reshape(kernel_grads, [-1, *layer.kernel.shape])


def _with_bias(
    layer: keras.layers.Layer,
    norms: tf.Tensor | None,
    kernel_grads: tf.Tensor | None,
    grads: tf.Tensor,
) -> UnitGradients:
    """Adds the bias gradient (from `grads`, the per-unit gradient at the output) to the
    kernel's norms or formed gradients."""
    bias_grads = _bias_gradients(grads) if layer.use_bias else None
    if kernel_grads is not None:
        gradients = [kernel_grads] if bias_grads is None else [kernel_grads, bias_grads]
        return UnitGradients(gradients_squared_norms(gradients), gradients)
    if bias_grads is not None:
        norms += tf.reduce_sum(tf.square(bias_grads), axis=1)
    return UnitGradients(norms)


@register(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
class ConvTransposeRule:
    """A transposed convolution is the input gradient of a convolution with the same kernel,
    strides, padding and dilation, from its output space to its input space. So its kernel
    gradient is that convolution's kernel gradient with the roles swapped: shifted views (or
    patches) of the gradient at the output meet the layer's input. The kernel's layout
    `(k..., filters, in_channels)` is the convolution's `(k..., in, out)`."""

    def supports(self, layer: keras.layers.Layer) -> bool:
        return (
            layer.data_format == "channels_last"
            and layer.padding in ("valid", "same")
            and getattr(layer, "quantization_mode", None) is None
            and len(layer.trainable_weights) == 1 + int(layer.use_bias)
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = keras.ops.conv_transpose(
            inputs,
            layer.kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        z, outputs = _biased_and_activated(layer, z)
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        inputs = tf.cast(saved, z_grad.dtype)
        norms, kernel_grads = _kernel_gradients(
            layer, z_grad, inputs, _static_spatial(inputs), num_units
        )
        return _with_bias(layer, norms, kernel_grads, per_unit(z_grad, num_units))


def _sum_per_unit(per_example: tf.Tensor, num_units: Any) -> tf.Tensor:
    """`(batch, ...)` per-example values summed over each unit's examples: `(units, ...)`."""
    if num_units is None:
        return per_example
    shape = tf.shape(per_example)
    return tf.reduce_sum(tf.reshape(per_example, tf.concat([[num_units, -1], shape[1:]], 0)), 1)


def _folded_depthwise_gradients(
    layer: keras.layers.Layer, inputs: tf.Tensor, z_grad: tf.Tensor, kernel: keras.Variable
) -> tf.Tensor:
    """Per-example depthwise kernel gradients from one depthwise filter gradient with the batch
    folded into the channels (a depthwise convolution keeps channels apart, so examples stay
    apart too): about the cost of the batch's own kernel gradient."""
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


def _depthwise_kernel_gradients(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    z_grad: tf.Tensor,
    num_units: Any,
    kernel: keras.Variable,
) -> tf.Tensor:
    """Per-unit gradients `(units, *kernel.shape)` of a depthwise kernel `(k..., in, multiplier)`
    from the input the depthwise convolution saw and the gradient at its output."""
    output_spatial = _static_spatial(z_grad)
    if output_spatial is None:
        raise NotSupported(f"layer '{layer.name}' has output sizes unknown at trace time")
    if all(d == 1 for d in layer.dilation_rate):
        per_example = _folded_depthwise_gradients(layer, inputs, z_grad, kernel)
    else:  # the native filter gradient takes no dilation on CPU: shifted views
        in_channels, multiplier = kernel.shape[-2], kernel.shape[-1]
        grads = tf.reshape(z_grad, [-1, *output_spatial, in_channels, multiplier])
        spatial_axes = list(range(1, 1 + len(output_spatial)))
        per_example = tf.stack(
            [
                tf.reduce_sum(view[..., tf.newaxis] * grads, axis=spatial_axes)
                for view in _shifted_views(layer, inputs, output_spatial)
            ],
            axis=1,
        )
        per_example = tf.reshape(per_example, [-1, *kernel.shape])
    return _sum_per_unit(per_example, num_units)


def _depthwise_supported(layer: keras.layers.Layer) -> bool:
    return (
        layer.data_format == "channels_last"
        and layer.padding in ("valid", "same")
        and getattr(layer, "quantization_mode", None) is None
    )


@register(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseConvRule:
    def supports(self, layer: keras.layers.Layer) -> bool:
        return _depthwise_supported(layer) and len(layer.trainable_weights) == 1 + int(
            layer.use_bias
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = keras.ops.depthwise_conv(
            inputs,
            layer.kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        z, outputs = _biased_and_activated(layer, z)
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.Layer, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        # Per-example depthwise kernels are small (k * channels * multiplier): always formed.
        saved = tf.cast(saved, z_grad.dtype)
        gradients = [_depthwise_kernel_gradients(layer, saved, z_grad, num_units, layer.kernel)]
        if layer.use_bias:
            gradients.append(_bias_gradients(per_unit(z_grad, num_units)))
        return UnitGradients(gradients_squared_norms(gradients), gradients)


@register(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableConvRule:
    def supports(self, layer: keras.layers.Layer) -> bool:
        return _depthwise_supported(layer) and len(layer.trainable_weights) == 2 + int(
            layer.use_bias
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        depthwise = keras.ops.depthwise_conv(
            inputs,
            layer.depthwise_kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        pointwise = tf.reshape(layer.pointwise_kernel, layer.pointwise_kernel.shape[-2:])
        z = keras.ops.matmul(depthwise, pointwise)
        z, outputs = _biased_and_activated(layer, z)
        return z, outputs, (inputs, depthwise)

    def unit_gradients(
        self,
        layer: keras.layers.Layer,
        saved: tuple[tf.Tensor, tf.Tensor],
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        inputs, depthwise = (tf.cast(t, z_grad.dtype) for t in saved)
        pointwise = tf.reshape(layer.pointwise_kernel, layer.pointwise_kernel.shape[-2:])
        depthwise_grad = tf.linalg.matmul(
            z_grad, tf.cast(pointwise, z_grad.dtype), transpose_b=True
        )
        depthwise_kernel_grads = _depthwise_kernel_gradients(
            layer, inputs, depthwise_grad, num_units, layer.depthwise_kernel
        )
        grads = per_unit(z_grad, num_units)
        pointwise_norms, pointwise_grads = outer_product_gradients(
            per_unit(depthwise, num_units), grads
        )
        norms = pointwise_norms + gradients_squared_norms([depthwise_kernel_grads])
        bias_grads = _bias_gradients(grads) if layer.use_bias else None
        if bias_grads is not None:
            norms += tf.reduce_sum(tf.square(bias_grads), axis=1)
        if pointwise_grads is None:
            return UnitGradients(norms)  # the clipped sum comes from a second backward pass
        gradients = [
            depthwise_kernel_grads,
            tf.reshape(pointwise_grads, [-1, *layer.pointwise_kernel.shape]),
        ]
        if bias_grads is not None:
            gradients.append(bias_grads)
        return UnitGradients(norms, gradients)
