"""Work-arounds for Keras 3 defects that would stop DP training, each removable on its own.

`fit()` under `tf.distribute.MultiWorkerMirroredStrategy` (Keras 3.15, TensorFlow 2.21) fails
for any optimizer, in two places:

- To build the model symbolically, Keras reduces the first distributed batch with
  `strategy.reduce("MEAN", ...)`, which that strategy cannot do eagerly on per-replica
  tensors. Building only needs shapes and dtypes: we build from the local replica's part.
- Each step's logs (scalar loss and metrics) are averaged with `strategy.reduce("MEAN", v,
  axis=0)`, and a scalar has no axis 0. We average scalars over replicas with `axis=None`.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tensorflow_trainer
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

_original_maybe_symbolic_build = TensorFlowTrainer._maybe_symbolic_build
_original_reduce_per_replica = tensorflow_trainer.reduce_per_replica


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    strategy = self._distribute_strategy
    if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _original_maybe_symbolic_build(self, iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        distributed_batch = next(batches)
        break

    def local_part(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    with strategy.scope():
        self._symbolic_build(data_batch=tree.map_structure(local_part, distributed_batch))


def _reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
    if reduction not in (
        "auto",
        "mean",
    ) or not tensorflow_trainer._collective_all_reduce_multi_worker(strategy):
        return _original_reduce_per_replica(values, strategy, reduction)

    def mean(value: Any) -> Any:
        axis = 0 if value.shape.rank else None
        return strategy.reduce("MEAN", value, axis=axis)

    return tree.map_structure(mean, values)


def install() -> None:
    """Apply the work-arounds (idempotent)."""
    TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tensorflow_trainer.reduce_per_replica = _reduce_per_replica
