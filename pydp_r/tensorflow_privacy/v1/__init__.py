"""TF Privacy's `tensorflow_privacy.v1` (tf.compat.v1 optimizers) on Keras 3.

The Gaussian and vectorized DP optimizers are pydp_r DP optimizers taking the tf.compat.v1
signatures (see `privacy.optimizers.dp_optimizer`); the DPQuery-based classes,
`make_optimizer_class` and the estimator `DNNClassifierV1` raise `NotSupportedOnKeras3Error` on
import.
"""

from __future__ import annotations

from pydp_r.tensorflow_privacy import _unsupported
from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer import (
    DPAdagradGaussianOptimizer,
    DPAdamGaussianOptimizer,
    DPGradientDescentGaussianOptimizer,
)
from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer_vectorized import (
    VectorizedDPAdagrad,
    VectorizedDPAdagradOptimizer,
    VectorizedDPAdam,
    VectorizedDPAdamOptimizer,
    VectorizedDPSGD,
    VectorizedDPSGDOptimizer,
)

__all__ = [
    "DPAdagradGaussianOptimizer",
    "DPAdamGaussianOptimizer",
    "DPGradientDescentGaussianOptimizer",
    "VectorizedDPAdagrad",
    "VectorizedDPAdagradOptimizer",
    "VectorizedDPAdam",
    "VectorizedDPAdamOptimizer",
    "VectorizedDPSGD",
    "VectorizedDPSGDOptimizer",
]

__getattr__ = _unsupported.module_getattr(
    __name__,
    (
        "DNNClassifierV1",
        "DPAdagradOptimizer",
        "DPAdamOptimizer",
        "DPGradientDescentOptimizer",
        "make_optimizer_class",
        "make_vectorized_optimizer_class",
    ),
)
