"""Embedding: an example's gradient adds its output gradients at the rows it looked up.

The squared norm of one unit's gradient is the sum over the distinct rows it looked up of
`||sum of g_t over its positions t reading that row||^2`. Two ways, picked per layer by cost:
pairwise, `sum_{t,s} [i_t == i_s] g_t . g_s`, costs positions^2 (dim + 2) per unit; sorted,
sorting each unit's indices so that equal rows are adjacent and summing each run of equal
rows, costs about positions (3 dim + 8 log2 positions) and memory like the output gradient.
Per-unit gradients `(units, vocabulary, dim)` are never formed.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import UnitGradients, per_unit, register


def pairwise_is_cheaper(positions: int | None, dim: int | None) -> bool:
    """Whether comparing all pairs of positions costs fewer operations than sorting.

    Args:
        positions: Lookups per unit (None when unknown at trace time: then sorting, whose
            cost grows only like positions log positions).
        dim: Embedding width (None when unknown).
    """
    if positions is None or dim is None:
        return False
    pairwise = positions * positions * (dim + 2)
    sorted_runs = positions * (3 * dim + 8 * math.log2(max(positions, 2)))
    return pairwise <= sorted_runs


def _pairwise_squared_norms(indices: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    same_row = tf.cast(tf.equal(indices[:, :, None], indices[:, None, :]), grads.dtype)
    grad_gram = tf.linalg.matmul(grads, grads, transpose_b=True)
    return tf.reduce_sum(same_row * grad_gram, [1, 2])


def _sorted_squared_norms(indices: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    order = tf.argsort(indices, axis=1, stable=True)
    sorted_indices = tf.gather(indices, order, batch_dims=1)
    sorted_grads = tf.gather(grads, order, batch_dims=1)
    starts_a_row = tf.concat(
        [
            tf.ones_like(sorted_indices[:, :1], tf.int32),
            tf.cast(tf.not_equal(sorted_indices[:, 1:], sorted_indices[:, :-1]), tf.int32),
        ],
        axis=1,
    )
    # Run number within the unit, offset by the unit so that every unit has its own segments.
    shape = tf.shape(indices)
    num_units, positions = shape[0], shape[1]
    segments = tf.cumsum(starts_a_row, axis=1) - 1 + tf.range(num_units)[:, None] * positions
    dim = grads.shape[-1] if grads.shape[-1] is not None else tf.shape(grads)[-1]
    row_sums = tf.math.unsorted_segment_sum(
        tf.reshape(sorted_grads, tf.stack([-1, dim])),
        tf.reshape(segments, [-1]),
        num_units * positions,
    )
    return tf.reduce_sum(tf.reshape(tf.square(row_sums), tf.stack([num_units, -1])), axis=1)


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
        indices = per_unit(tf.cast(saved, tf.int64)[..., tf.newaxis], num_units)[..., 0]
        grads = per_unit(z_grad, num_units)
        if pairwise_is_cheaper(indices.shape[1], grads.shape[2]):
            return UnitGradients(_pairwise_squared_norms(indices, grads))
        return UnitGradients(_sorted_squared_norms(indices, grads))
