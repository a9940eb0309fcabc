"""`keras.ops` operations between layers of a functional model (or inside a layer's `call`)
that are per-example, each with the check that proves it for one call.

The walk over a call graph starts from inputs whose axis 0 is the batch, so every graph tensor
(`keras.KerasTensor`) an operation receives has the batch as axis 0. A check then proves two
things from the call's arguments and attributes: no output row depends on another example's
rows, and the output keeps the batch as axis 0. Anything else among the arguments (a Python
number, a NumPy array, a weight) is the same for every example. Declared only where that holds:

- elementwise functions of one tensor (activations, casts, `abs`, `exp`, ...);
- elementwise arithmetic between graph tensors of the output's rank (their batch axes line
  up), and with batch-free operands of lower rank or a leading dimension of 1;
- operations along axes (softmax, reductions, normalization, concatenation, stacking, flips,
  cumulative sums) whose axes do not include the batch axis;
- reshapes that keep each example's number of elements (static), transposes and
  `expand_dims`/`squeeze` that keep the batch axis first, slicing that takes every example;
- pooling, and matrix products whose batch axes line up (or with a constant matrix);
- patches of batched images (`keras.ops.image.extract_patches`), splits along other axes
  than the batch axis, constants shaped like a graph tensor (`zeros_like`, `ones_like`), and
  Fourier transforms over trailing axes that leave the batch axis out.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from pydp_r.grad_norms.registry import register_operation


def _is_graph_tensor(value: Any) -> bool:
    return isinstance(value, keras.KerasTensor)


def _graph_tensors(args: tuple, kwargs: dict) -> list[Any]:
    return [v for v in keras.tree.flatten((args, kwargs)) if _is_graph_tensor(v)]


def _keeps_batch(outputs: list, args: tuple, kwargs: dict) -> str | None:
    """None when every output's axis 0 is the batch axis of the call's graph tensors."""
    batch = [t.shape[0] for t in _graph_tensors(args, kwargs) if len(t.shape)]
    for output in outputs:
        if len(output.shape) == 0 or not batch or output.shape[0] != batch[0]:
            return f"gives an output of shape {tuple(output.shape)} without the batch axis first"
    return None


def _axes(axis: Any, rank: int) -> list[int] | None:
    """`axis` (an int, a sequence or None) as non-negative axes of a rank-`rank` tensor."""
    if axis is None:
        return None
    axes = [axis] if isinstance(axis, int) else list(axis)
    return [a % rank if rank else a for a in axes]


def _along_axes(axis: Any, rank: int) -> str | None:
    axes = _axes(axis, rank)
    if axes is None:
        return "runs over all axes, the batch axis included (axis=None)"
    if 0 in axes:
        return f"runs along the batch axis (axis={axis})"
    return None


@register_operation(
    *"Absolute Negative Exp Log Sqrt Square Sin Cos Tanh Erf Clip Cast StopGradient Relu Relu6 "
    "Gelu Silu Sigmoid HardSigmoid Softplus Softsign Elu Selu LeakyRelu".split()
)
def _elementwise_of_one(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    tensors = _graph_tensors(args, kwargs)
    if len(tensors) != 1:
        return "takes several graph tensors"
    if tuple(outputs[0].shape) != tuple(tensors[0].shape):
        return "changes the shape"
    return _keeps_batch(outputs, args, kwargs)


@register_operation(*"Add Subtract Multiply Divide TrueDivide Power Maximum Minimum Where".split())
def _elementwise_broadcast(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    # Broadcasting aligns trailing axes: a graph tensor of lower rank than the output would
    # put its batch axis against a per-position axis of another example's data.
    rank = len(outputs[0].shape)
    for value in keras.tree.flatten((args, kwargs)):
        if value is None or isinstance(value, bool | int | float | str):
            continue
        shape = tuple(getattr(value, "shape", ()))
        if _is_graph_tensor(value):
            if len(shape) != rank:
                return (
                    f"broadcasts a tensor of shape {shape} against the batch of rank {rank}, "
                    "which would align its batch axis with another axis"
                )
        # A tensor that is not a graph tensor was computed without the inputs (a constant, or
        # a random draw of the batch's size, as in stochastic depth): row i meets example i
        # alone, whatever its axis 0, so no example's output depends on another's data.
    return _keeps_batch(outputs, args, kwargs)


@register_operation(
    *"Softmax LogSoftmax Normalize Mean Sum Max Min Std Var Logsumexp Cumsum Flip Norm".split()
)
def _along_axis(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    tensors = _graph_tensors(args, kwargs)
    if len(tensors) != 1 or not _is_graph_tensor(args[0]):
        return "takes graph tensors besides its first argument"
    reason = _along_axes(getattr(operation, "axis", None), len(args[0].shape))
    return reason or _keeps_batch(outputs, args, kwargs)


@register_operation("Concatenate")
def _concatenate(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    rank = len(outputs[0].shape)
    for value in keras.tree.flatten(args):
        if not _is_graph_tensor(value):
            return "joins a batch-free tensor to the batch"
    return _along_axes(operation.axis, rank) or _keeps_batch(outputs, args, kwargs)


@register_operation("Stack")
def _stack(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    for value in keras.tree.flatten(args):
        if not _is_graph_tensor(value):
            return "stacks a batch-free tensor with the batch"
    return _along_axes(operation.axis, len(outputs[0].shape)) or _keeps_batch(outputs, args, kwargs)


def _example_size(shape: tuple) -> int | None:
    rest = shape[1:]
    return math.prod(rest) if all(d is not None for d in rest) else None


@register_operation("Reshape")
def _reshape(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    before, after = _example_size(tuple(args[0].shape)), _example_size(tuple(outputs[0].shape))
    if before is None or after is None or before != after:
        return (
            f"reshapes {tuple(args[0].shape)} to {tuple(outputs[0].shape)}: an example's "
            "elements are not provably its own rows"
        )
    return _keeps_batch(outputs, args, kwargs)


@register_operation("Transpose")
def _transpose(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    axes = _axes(operation.axes, len(args[0].shape))
    if axes is None or axes[0] != 0:
        return f"moves the batch axis (axes={operation.axes})"
    return _keeps_batch(outputs, args, kwargs)


@register_operation("ExpandDims")
def _expand_dims(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    if 0 in _axes(operation.axis, len(outputs[0].shape)):
        return f"inserts an axis before the batch axis (axis={operation.axis})"
    return _keeps_batch(outputs, args, kwargs)


@register_operation("Squeeze")
def _squeeze(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    return _along_axes(operation.axis, len(args[0].shape)) or _keeps_batch(outputs, args, kwargs)


@register_operation("GetItem")
def _get_item(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    tensor, key = args[0], args[1] if len(args) > 1 else kwargs.get("key")
    key = tuple(key) if isinstance(key, tuple | list) else (key,)
    if _graph_tensors((key,), {}):
        return "indexes with a graph tensor"
    first = key[0] if key else slice(None)
    takes_all = first == slice(None) or (
        first is Ellipsis
        and sum(k is not None and k is not Ellipsis for k in key) < len(tensor.shape)
    )
    if not takes_all:
        return f"does not take every example along the batch axis (key {key!r})"
    return _keeps_batch(outputs, args, kwargs)


@register_operation("AveragePool", "MaxPool")
def _pooling(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    if len(_graph_tensors(args, kwargs)) != 1:
        return "takes several graph tensors"
    return _keeps_batch(outputs, args, kwargs)


@register_operation("Matmul")
def _matmul(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    first, second = args[0], args[1]
    if _is_graph_tensor(first) and _is_graph_tensor(second):
        # Batched matrix products: the leading (batch) axes line up only at equal ranks >= 3.
        if len(first.shape) == len(second.shape) >= 3:
            return _keeps_batch(outputs, args, kwargs)
        return "multiplies two graph tensors whose batch axes do not line up"
    if _is_graph_tensor(first) and len(first.shape) >= 2 and len(second.shape) == 2:
        return _keeps_batch(outputs, args, kwargs)
    return "multiplies the batch by a matrix from the left"


@register_operation("ExtractPatches")
def _extract_patches(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    # A convolution with an identity kernel over each image; an input of rank len(size) + 1 is
    # taken as one unbatched image, whose first axis would be the batch.
    images = args[0] if args else kwargs.get("images")
    if len(_graph_tensors(args, kwargs)) != 1 or not _is_graph_tensor(images):
        return "takes graph tensors besides its images"
    if len(images.shape) != len(operation.size) + 2:
        return (
            f"takes images of shape {tuple(images.shape)} as one unbatched image (its first "
            "axis, the batch, would be a spatial axis)"
        )
    return _keeps_batch(outputs, args, kwargs)


@register_operation("Split")
def _split(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    if len(_graph_tensors(args, kwargs)) != 1 or not _is_graph_tensor(args[0]):
        return "takes graph tensors besides its first argument"
    return _along_axes(operation.axis, len(args[0].shape)) or _keeps_batch(outputs, args, kwargs)


@register_operation("ZerosLike", "OnesLike")
def _constant_like(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    # The output is a constant of the argument's shape: no example's values reach it.
    if len(_graph_tensors(args, kwargs)) != 1:
        return "takes several graph tensors"
    return _keeps_batch(outputs, args, kwargs)


# Fourier transforms over the last axes: the number of transformed axes, from the end.
_FOURIER_AXES = {"FFT": 1, "RFFT": 1, "IRFFT": 1, "FFT2": 2, "IFFT2": 2}


@register_operation(*_FOURIER_AXES)
def _fourier(operation: Any, args: tuple, kwargs: dict, outputs: list) -> str | None:
    # The real and imaginary parts (or the real input) are graph tensors of one shape, all
    # transformed along their last axes only.
    tensors = _graph_tensors(args[:1], {})
    if not tensors or len(tensors) != len(keras.tree.flatten(args[:1])):
        return "transforms a batch-free tensor with the batch"
    if _graph_tensors((args[1:], kwargs), {}):
        return "takes graph tensors besides its input"
    transformed = _FOURIER_AXES[type(operation).__name__]
    for tensor in tensors:
        if len(tensor.shape) <= transformed:
            return (
                f"transforms the last {transformed} axes of a tensor of shape "
                f"{tuple(tensor.shape)}, the batch axis among them"
            )
    if len({tuple(tensor.shape) for tensor in tensors}) != 1:
        return "takes real and imaginary parts of different shapes"
    return _keeps_batch(outputs, args, kwargs)
