"""TF Privacy's `privacy.optimizers.dp_optimizer_vectorized` (tf.compat.v1) on Keras 3.

`VectorizedDPSGD`, `VectorizedDPAdam` and `VectorizedDPAdagrad` (and their `...Optimizer`
aliases) are pydp_r's `DPSGD`, `DPAdam` and `DPAdagrad` taking TF Privacy's signature
`(l2_norm_clip, noise_multiplier, num_microbatches=None, <tf.compat.v1.train optimizer
arguments>)`, renamed to Keras 3's as in `dp_optimizer`. `make_vectorized_optimizer_class`
(which takes a tf.compat.v1 class) raises `NotSupportedOnKeras3Error` on import.
"""

from __future__ import annotations

from pydp_r.tensorflow_privacy import _unsupported
from pydp_r.tensorflow_privacy.privacy.optimizers import _translated

__all__ = [
    "VectorizedDPAdagrad",
    "VectorizedDPAdagradOptimizer",
    "VectorizedDPAdam",
    "VectorizedDPAdamOptimizer",
    "VectorizedDPSGD",
    "VectorizedDPSGDOptimizer",
]


def _vectorized(class_name: str, v1_name: str) -> type:
    dp_base, old_arguments, fixed = _translated.V1_CLASSES[v1_name]
    doc = _translated.v1_doc(class_name, f"{v1_name}Optimizer", dp_base, "")
    return _translated.make_translated_class(
        class_name, dp_base, (), old_arguments, fixed, doc, __name__
    )


VectorizedDPSGD = _vectorized("VectorizedDPSGD", "GradientDescent")
VectorizedDPAdam = _vectorized("VectorizedDPAdam", "Adam")
VectorizedDPAdagrad = _vectorized("VectorizedDPAdagrad", "Adagrad")
VectorizedDPSGDOptimizer = VectorizedDPSGD
VectorizedDPAdamOptimizer = VectorizedDPAdam
VectorizedDPAdagradOptimizer = VectorizedDPAdagrad

__getattr__ = _unsupported.module_getattr(__name__, ("make_vectorized_optimizer_class",))
