"""The one door into Keras and TensorFlow internals: every `keras.src` import and private
attribute pydp_r needs lives here, checked against the Keras versions it was tested with.

Everything else in pydp_r uses public API (a ruff rule bans `keras.src` elsewhere). When a
Keras release moves one of these, this module and its contract tests
(`tests/python/test_keras_contract.py`) are what change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from keras.src.losses import loss as _loss_module
from keras.src.models.functional import Functional

__all__ = [
    "Functional",
    "TensorFlowTrainer",
    "call_has_training_arg",
    "causal_padding",
    "flatten_layers",
    "is_graph_network",
    "loss_tracker",
    "unscale_loss_for_distribution",
]


def is_graph_network(model: Any) -> bool:
    """Whether `model` is exactly a Sequential or a functional model (not a subclass)."""
    return type(model) in (keras.Sequential, Functional)


def flatten_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer inside `model`, nested models and their layers included, `model` excluded."""
    return model._flatten_layers(include_self=False, recursive=True)


def causal_padding(layer: keras.layers.Layer) -> Any:
    """The padding a causal convolution layer applies before a "valid" convolution."""
    return layer._compute_causal_padding()


def call_has_training_arg(model: keras.Model) -> bool:
    """Whether `model.call` accepts a `training` argument."""
    return model._call_has_training_arg


def loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    """The mean metric behind the `loss` entry of `fit()`'s logs."""
    return model._loss_tracker


def unscale_loss_for_distribution(loss: Any) -> Any:
    """Undo the 1 / num_replicas scaling Keras applies to losses under tf.distribute."""
    return _loss_module.unscale_loss_for_distribution(loss)
