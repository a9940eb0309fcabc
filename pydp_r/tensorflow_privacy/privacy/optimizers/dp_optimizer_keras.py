"""TF Privacy's `privacy.optimizers.dp_optimizer_keras` on Keras 3: the DPKeras* optimizers.

`DPKerasSGDOptimizer`, `DPKerasAdamOptimizer` and `DPKerasAdagradOptimizer` are pydp_r's
`DPSGD`, `DPAdam` and `DPAdagrad`, with TF Privacy's signature `(l2_norm_clip,
noise_multiplier, num_microbatches=None, gradient_accumulation_steps=1, *args, **kwargs)`,
the rest going to the Keras 3 optimizer. TF Privacy subclasses legacy Keras 2 optimizers; these
subclass Keras 3's, whose update rules are the same for SGD and Adam (Adagrad adds its epsilon
inside the square root). A loss with `reduction="none"` (as TF Privacy's tutorials use) and a
reduced loss both work: pydp_r's step differentiates each example's loss itself.
"""

from __future__ import annotations

import keras

from pydp_r import optimizers
from pydp_r.tensorflow_privacy import _unsupported

__all__ = [
    "DPKerasAdagradOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasSGDOptimizer",
    "make_keras_optimizer_class",
]


DPKerasSGDOptimizer = optimizers.DPKerasSGDOptimizer
DPKerasAdamOptimizer = optimizers.DPKerasAdamOptimizer
DPKerasAdagradOptimizer = optimizers.DPKerasAdagradOptimizer

# One DP class per Keras class: building it twice would register two classes under one name.
_DP_CLASSES: dict[type, type] = {
    keras.optimizers.SGD: optimizers.DPSGD,
    keras.optimizers.Adam: optimizers.DPAdam,
    keras.optimizers.Adagrad: optimizers.DPAdagrad,
    keras.optimizers.RMSprop: optimizers.DPRMSprop,
}


def make_keras_optimizer_class(cls: type) -> type:
    """The DP-SGD (Gaussian query) version of a Keras 3 optimizer class, as TF Privacy's.

    Args:
        cls: A subclass of `keras.optimizers.Optimizer` (e.g. `tf.keras.optimizers.Lion`; on
            TensorFlow >= 2.16 `tf.keras.optimizers.X` is Keras 3's).

    Returns:
        `pydp_r.make_dp_optimizer_class(cls)`, built once per class: constructor
        `(l2_norm_clip, noise_multiplier, num_microbatches=None, gradient_accumulation_steps=1,
        *args, **kwargs)`.

    Raises:
        ValueError: When `cls` is not a Keras 3 optimizer class or is already a DP one.
    """
    if cls not in _DP_CLASSES:
        _DP_CLASSES[cls] = optimizers.make_dp_optimizer_class(cls)
    return _DP_CLASSES[cls]


__getattr__ = _unsupported.module_getattr(
    __name__,
    (
        "GenericDPAdagradOptimizer",
        "GenericDPAdamOptimizer",
        "GenericDPSGDOptimizer",
        "DPFTRLTreeAggregationOptimizer",
        "make_keras_generic_optimizer_class",
        "make_gaussian_query_optimizer_class",
        "make_dpftrl_tree_aggregation_optimizer_class",
    ),
)
