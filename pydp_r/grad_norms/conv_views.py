"""Input views of a convolution: for each kernel offset, the part of the input it meets.

For kernel offset `o` (per spatial axis) the input element that meets output position `t` is
`x[t * stride + o * dilation - padding_before]`. That element for every `t` is the offset's
view, `(batch, *output_spatial, channels)`; patches are all offsets' views side by side. The
per-example kernel gradients (`conv_gradients`) and the ghost norms (`conv_ghost_norms`) are
both computed from these views.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import NotSupported


def static_spatial_sizes(tensor: tf.Tensor) -> list[int] | None:
    """The spatial sizes of a channels-last `(batch, *spatial, channels)` tensor, or None when
    one of them is unknown at trace time."""
    spatial = tensor.shape[1:-1]
    return list(spatial) if spatial.is_fully_defined() else None


def shifted_views(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    output_spatial: list[int],
    channels_first: bool = False,
) -> Iterator[tf.Tensor]:
    """For each kernel offset (row-major over the kernel's spatial axes), the input view it
    meets at every output position.

    Args:
        layer: The convolution (its kernel size, strides, dilation and padding are read).
        inputs: What the convolution saw, `(batch, *spatial, channels)`, or with
            `channels_first` `(batch, channels, *spatial)`; for causal padding the already
            left-padded input.
        output_spatial: The output's spatial sizes.
        channels_first: The layout of `inputs` and of the views.

    Returns:
        The views, `(batch, *output_spatial, channels)` (or channels first), each built when
        the iterator is advanced to it: a caller may build a view only after some earlier
        operation by advancing the iterator under `tf.control_dependencies`.
    """
    spatial = _spatial_shape(inputs, channels_first)
    paddings = _paddings(layer, spatial, output_spatial)
    if all(stride == 1 for stride in layer.strides):
        return _unstrided_views(layer, inputs, output_spatial, paddings, channels_first)
    if any(amount for pair in paddings for amount in pair):
        inputs = tf.pad(inputs, _on_spatial_axes(paddings, [0, 0], channels_first))
    if _spatial_shape(inputs, channels_first).is_fully_defined():
        return _stride_split_views(layer, inputs, output_spatial, channels_first)
    return _strided_slice_views(layer, inputs, output_spatial, channels_first)


def positions_last_patches(
    layer: keras.layers.Layer, inputs: tf.Tensor, output_spatial: list[int], num_units: Any
) -> tf.Tensor:
    """The patches of a channels-last `inputs` per unit, `(units, kernel_positions * channels,
    positions)`, features offset-major as the kernel's `(k..., channels)` flattens.

    The input is transposed to channels first once; its views, stacked offset-major, are then
    the patches with no further transpose. A unit's positions are its examples' positions in
    turn; `num_units` is None for one unit per example.
    """
    rank = len(output_spatial)
    channels_first = tf.transpose(inputs, [0, rank + 1, *range(1, rank + 1)])
    views = list(shifted_views(layer, channels_first, output_spatial, channels_first=True))
    features, positions = len(views) * inputs.shape[-1], math.prod(output_spatial)
    patches = tf.reshape(tf.stack(views, axis=1), [-1, features, positions])
    if num_units is None:
        return patches
    patches = tf.reshape(patches, tf.stack([num_units, -1, features, positions]))
    return tf.reshape(tf.transpose(patches, [0, 2, 1, 3]), tf.stack([num_units, features, -1]))


def extracted_patches(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """`tf.image.extract_patches` of a 1-D or 2-D convolution's input, `(batch, *output_spatial,
    kernel_positions * channels)`, for output sizes unknown at trace time; `inputs` is what the
    convolution saw (for causal padding, the already left-padded input).

    Raises:
        NotSupported: For a 3-D convolution (`extract_patches` is 2-D only).
    """
    if layer.rank == 3:
        raise NotSupported(f"layer '{layer.name}' has output sizes unknown at trace time")
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


def _spatial_shape(tensor: tf.Tensor, channels_first: bool) -> tf.TensorShape:
    return tensor.shape[2:] if channels_first else tensor.shape[1:-1]


def _on_spatial_axes(spatial: list[Any], fill: Any, channels_first: bool) -> list[Any]:
    """`spatial` (one entry per spatial axis) with `fill` for the batch and channel axes."""
    return [fill, fill, *spatial] if channels_first else [fill, *spatial, fill]


def _paddings(
    layer: keras.layers.Layer, spatial: tf.TensorShape, output_spatial: list[int]
) -> list[list[int]]:
    """`[before, after]` zeros per spatial axis that the convolution pads its input with
    (none but for "same"; causal padding is already in the input)."""
    if layer.padding != "same":
        return [[0, 0]] * len(output_spatial)
    paddings = []
    for size, out, kernel, stride, dilation in zip(
        spatial, output_spatial, layer.kernel_size, layer.strides, layer.dilation_rate, strict=True
    ):
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        paddings.append([total // 2, total - total // 2])
    return paddings


def _offset_starts(layer: keras.layers.Layer) -> Iterator[tuple[int, ...]]:
    """Per kernel offset `o` (row-major), `o * dilation` on each spatial axis."""
    return itertools.product(
        *(
            range(0, kernel * dilation, dilation)
            for kernel, dilation in zip(layer.kernel_size, layer.dilation_rate, strict=True)
        )
    )


def _unstrided_views(
    layer: keras.layers.Layer,
    inputs: tf.Tensor,
    output_spatial: list[int],
    paddings: list[list[int]],
    channels_first: bool,
) -> Iterator[tf.Tensor]:
    """Stride 1: each view is a slice of the unpadded input, padded on its own where it reaches
    into the padding (a padded copy of the whole input would live as long as the views do)."""
    spatial = _spatial_shape(inputs, channels_first)
    for starts in _offset_starts(layer):
        index, view_paddings = [], []
        for offset_start, (before, _), out, size in zip(
            starts, paddings, output_spatial, spatial, strict=True
        ):
            start, stop = offset_start - before, offset_start - before + out
            low, high = max(start, 0), stop if size is None else min(stop, size)
            index.append(slice(low, high))
            view_paddings.append([low - start, stop - high])
        view = inputs[tuple(_on_spatial_axes(index, slice(None), channels_first))]
        if any(amount for pair in view_paddings for amount in pair):
            view = tf.pad(view, _on_spatial_axes(view_paddings, [0, 0], channels_first))
        yield view


def _stride_split_views(
    layer: keras.layers.Layer, inputs: tf.Tensor, output_spatial: list[int], channels_first: bool
) -> Iterator[tf.Tensor]:
    """Strides above 1, padded input of known sizes: each spatial axis, zero-padded at the end
    to a multiple `n` of its stride `s`, is split into `(n / s, s)`; a view is then a plain
    slice of the outer axes at one inner index, not a strided slice (why: benchmarks/README.md,
    "Convolution rules")."""
    spatial = list(_spatial_shape(inputs, channels_first))
    extra = [(-size) % stride for size, stride in zip(spatial, layer.strides, strict=True)]
    if any(extra):
        inputs = tf.pad(inputs, _on_spatial_axes([[0, e] for e in extra], [0, 0], channels_first))
    split_spatial = [
        axis
        for size, e, stride in zip(spatial, extra, layer.strides, strict=True)
        for axis in ((size + e) // stride, stride)
    ]
    channels = inputs.shape[1] if channels_first else inputs.shape[-1]
    split = tf.reshape(
        inputs,
        [-1, channels, *split_spatial] if channels_first else [-1, *split_spatial, channels],
    )
    for starts in _offset_starts(layer):
        index: list[Any] = []
        for start, out, stride in zip(starts, output_spatial, layer.strides, strict=True):
            outer, inner = divmod(start, stride)
            index += [slice(outer, outer + out), inner]
        yield split[tuple(_on_spatial_axes(index, slice(None), channels_first))]


def _strided_slice_views(
    layer: keras.layers.Layer, inputs: tf.Tensor, output_spatial: list[int], channels_first: bool
) -> Iterator[tf.Tensor]:
    """Strides above 1, padded input of sizes unknown at trace time: strided slices."""
    for starts in _offset_starts(layer):
        index = [
            slice(start, start + (out - 1) * stride + 1, stride)
            for start, out, stride in zip(starts, output_spatial, layer.strides, strict=True)
        ]
        yield inputs[tuple(_on_spatial_axes(index, slice(None), channels_first))]
