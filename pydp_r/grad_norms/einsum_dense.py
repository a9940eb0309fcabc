"""EinsumDense (and so MultiHeadAttention's projections): an einsum is a Dense in disguise.

With the batch as the first letter of input and output and not in the kernel, every other
letter of an equation the rule covers is one of: a position (input and output, not kernel),
contracted (input and kernel), or an output feature (kernel and output). Transposing the input
to `(batch, positions, contracted)` and the output gradient to `(batch, positions, features)`
makes the kernel gradient an outer product summed over positions, as for Dense.
"""

from __future__ import annotations

import math
import string
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import (
    UnitGradients,
    outer_product_gradients,
    per_unit,
    register,
)


class _Letters(NamedTuple):
    """An equation written out for one input rank, without ellipsis."""

    inputs: str
    kernel: str
    outputs: str


def _explicit(equation: str, input_rank: int) -> _Letters | None:
    """The equation with any `...` replaced by letters for `input_rank`, or None if malformed."""
    try:
        operands, outputs = equation.replace(" ", "").split("->")
        inputs, kernel = operands.split(",")
    except ValueError:
        return None
    if "..." in kernel or inputs.count("...") != outputs.count("..."):
        return None
    if "..." in inputs:
        named = inputs.replace("...", "")
        unused = [c for c in string.ascii_letters if c not in equation]
        elided = "".join(unused[: input_rank - len(named)])
        inputs, outputs = inputs.replace("...", elided), outputs.replace("...", elided)
    if len(inputs) != input_rank:
        return None
    return _Letters(inputs, kernel, outputs)


def _letters(layer: keras.layers.EinsumDense) -> _Letters | None:
    """The layer's equation for the input rank it was built for (None before it is built)."""
    input_spec = layer.input_spec
    if input_spec is None or getattr(input_spec, "ndim", None) is None:
        return None
    return _explicit(layer.equation, input_spec.ndim)


@register(keras.layers.EinsumDense)
class EinsumDenseRule:
    def is_per_example(self, layer: keras.layers.EinsumDense) -> bool:
        # The batch must stay axis 0 of the output and never meet the kernel.
        letters = _letters(layer)
        if letters is None:
            return False
        batch = letters.inputs[0]
        return (
            letters.outputs[:1] == batch
            and batch not in letters.kernel
            and letters.inputs.count(batch) == 1
            and letters.outputs.count(batch) == 1
        )

    def supports(self, layer: keras.layers.EinsumDense) -> bool:
        letters = _letters(layer)
        if letters is None or getattr(layer, "lora_enabled", False):
            return False
        if getattr(layer, "quantization_mode", None) is not None:
            return False
        inputs, kernel, outputs = set(letters.inputs), set(letters.kernel), set(letters.outputs)
        all_letters = letters.inputs + letters.kernel + letters.outputs
        return (
            # Each letter in exactly two operands, once in each: no traces, sums or diagonals.
            all(all_letters.count(c) == 2 for c in inputs | kernel | outputs)
            and len(inputs) == len(letters.inputs)
            and len(kernel) == len(letters.kernel)
            and len(outputs) == len(letters.outputs)
            and len(layer.trainable_weights) == 1 + int(getattr(layer, "bias", None) is not None)
        )

    def forward(
        self, layer: keras.layers.EinsumDense, inputs: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z = keras.ops.einsum(layer.equation, inputs, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        outputs = layer.activation(z) if layer.activation is not None else z
        return z, outputs, inputs

    def unit_gradients(
        self, layer: keras.layers.EinsumDense, saved: tf.Tensor, z_grad: tf.Tensor, num_units: Any
    ) -> UnitGradients:
        inputs_letters, kernel_letters, output_letters = _explicit(layer.equation, saved.shape.rank)
        batch = inputs_letters[0]
        positions = [c for c in inputs_letters[1:] if c in output_letters]
        contracted = [c for c in inputs_letters if c in kernel_letters]
        features = [c for c in output_letters if c in kernel_letters]
        sizes = dict(zip(kernel_letters, layer.kernel.shape, strict=True))

        position_sizes = [saved.shape[inputs_letters.index(c)] for c in positions]
        # Static when every position axis is, so that per_unit and the cost choice see it.
        positions_size = -1 if None in position_sizes else math.prod(position_sizes)

        def as_matrix(tensor: tf.Tensor, letters: str, columns: list[str]) -> tf.Tensor:
            """`(batch, ...)` in `letters` -> `(units, positions per unit, columns)`."""
            order = [letters.index(c) for c in (batch, *positions, *columns)]
            columns_size = math.prod(sizes[c] for c in columns)
            transposed = tf.transpose(tensor, order)
            rows = -1 if positions_size != -1 else tf.shape(tensor)[0]
            matrix = tf.reshape(transposed, tf.stack([rows, positions_size, columns_size]))
            return per_unit(matrix, num_units)

        grads = as_matrix(z_grad, output_letters, features)
        activations = as_matrix(tf.cast(saved, z_grad.dtype), inputs_letters, contracted)
        norms, kernel_grads = outer_product_gradients(activations, grads)
        gradients = None
        if kernel_grads is not None:
            # (units, contracted, features) -> kernel's own letter order
            kernel_grads = tf.reshape(
                kernel_grads, [-1, *(sizes[c] for c in contracted + features)]
            )
            formed_order = contracted + features
            kernel_grads = tf.transpose(
                kernel_grads, [0, *(1 + formed_order.index(c) for c in kernel_letters)]
            )
            gradients = [kernel_grads]
        if layer.bias is not None:
            # Sum over the output axes without bias (batch excepted), then over each unit.
            summed = [
                i for i, c in enumerate(output_letters) if c != batch and c not in layer.bias_axes
            ]
            bias_grads = tf.reduce_sum(z_grad, axis=summed)
            bias_grads = tf.reduce_sum(
                per_unit(tf.reshape(bias_grads, [-1, 1, math.prod(layer.bias.shape)]), num_units),
                axis=1,
            )
            norms += tf.reduce_sum(tf.square(bias_grads), axis=1)
            if gradients is not None:
                gradients.append(tf.reshape(bias_grads, [-1, *layer.bias.shape]))
        return UnitGradients(norms, gradients)
