"""Wrapper layers that reuse the rule of the layer they wrap, and frozen BatchNormalization.

TimeDistributed applies its inner layer to every time step with the same weights, so an
example's weight gradient is the inner layer's gradient summed over steps and the inner
layer's positions alike: folding the steps into the batch and handing the inner rule units of
`steps` consecutive rows gives exactly that (rules already group consecutive rows into units
for microbatches). Bidirectional is declared `through_sublayers` in `per_example`: its forward
and backward layers are called once each on the whole sequence.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import UnitGradients, per_example_kind, register, rule_for


@register(keras.layers.TimeDistributed)
class TimeDistributedRule:
    def is_per_example(self, layer: keras.layers.TimeDistributed) -> bool:
        return per_example_kind(layer.layer) is not None

    def supports(self, layer: keras.layers.TimeDistributed) -> bool:
        inner_rule = rule_for(layer.layer)
        return (
            inner_rule is not None
            and getattr(inner_rule, "exact_under_xla", True)
            and list(layer.trainable_weights) == list(layer.layer.trainable_weights)
        )

    def forward(
        self, layer: keras.layers.TimeDistributed, inputs: tf.Tensor
    ) -> tuple[Any, tf.Tensor, tuple[Any, tf.Tensor]]:
        shape = tf.shape(inputs)
        folded = tf.reshape(inputs, tf.concat([[-1], shape[2:]], 0))
        folded.set_shape([None, *inputs.shape[2:]])
        z, outputs, saved = rule_for(layer.layer).forward(layer.layer, folded)
        outputs = tf.reshape(outputs, tf.concat([shape[:2], tf.shape(outputs)[1:]], 0))
        outputs.set_shape([inputs.shape[0], inputs.shape[1], *outputs.shape[2:]])
        return z, outputs, (saved, shape[0])

    def unit_gradients(
        self,
        layer: keras.layers.TimeDistributed,
        saved: tuple[Any, tf.Tensor],
        z_grad: Any,
        num_units: Any,
    ) -> UnitGradients:
        inner_saved, batch_size = saved
        units = batch_size if num_units is None else num_units
        return rule_for(layer.layer).unit_gradients(layer.layer, inner_saved, z_grad, units)


@register(keras.layers.BatchNormalization)
class FrozenBatchNormalizationRule:
    """With `trainable=False`, Keras 3 runs BatchNormalization in inference mode (its moving
    statistics, no updates): per-example, with no weights to clip. Trainable ones mix the batch
    (`pydp_r.batch_norm.check_no_batch_norm` refuses them)."""

    def is_per_example(self, layer: keras.layers.BatchNormalization) -> bool:
        return not layer.trainable

    def supports(self, layer: keras.layers.BatchNormalization) -> bool:
        return False  # no trainable weights: nothing to compute
