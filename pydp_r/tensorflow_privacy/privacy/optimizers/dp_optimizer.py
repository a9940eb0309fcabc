"""TF Privacy's `privacy.optimizers.dp_optimizer` (the 2019 API) on Keras 3: the Gaussian names.

TF Privacy's 2019 optimizers subclass `tf.compat.v1.train` optimizers, which Keras 3 cannot
train with. Where a Keras 3 optimizer takes the same steps, the Gaussian name is a pydp_r DP
optimizer taking the old signature `(l2_norm_clip, noise_multiplier, num_microbatches=None,
unroll_microbatches=False, <tf.compat.v1.train optimizer arguments>)`:

- `DPGradientDescentGaussianOptimizer` -> `pydp_r.DPSGD` (`learning_rate` required, as in v1);
- `DPAdamGaussianOptimizer` -> `pydp_r.DPAdam` (`beta1`/`beta2` -> `beta_1`/`beta_2`, v1's
  `epsilon=1e-8`);
- `DPAdagradGaussianOptimizer` -> `pydp_r.DPAdagrad` (`epsilon=0`, v1's update).

`DPRMSPropGaussianOptimizer`, `DPFtrlGaussianOptimizer`, the DPQuery-based
`DP*Optimizer(dp_sum_query, ...)` classes and `make_optimizer_class` /
`make_gaussian_optimizer_class` raise `NotSupportedOnKeras3Error` on import, saying why.
"""

from __future__ import annotations

from pydp_r.tensorflow_privacy import _unsupported
from pydp_r.tensorflow_privacy.privacy.optimizers import _translated

__all__ = [
    "DPAdagradGaussianOptimizer",
    "DPAdamGaussianOptimizer",
    "DPGradientDescentGaussianOptimizer",
]


def _gaussian(v1_name: str) -> type:
    dp_base, old_arguments, fixed = _translated.V1_CLASSES[v1_name]
    class_name = f"DP{v1_name}GaussianOptimizer"
    doc = _translated.v1_doc(
        class_name, f"{v1_name}Optimizer", dp_base, ", unroll_microbatches=False"
    )
    return _translated.make_translated_class(
        class_name, dp_base, ("unroll_microbatches",), old_arguments, fixed, doc, __name__
    )


DPGradientDescentGaussianOptimizer = _gaussian("GradientDescent")
DPAdamGaussianOptimizer = _gaussian("Adam")
DPAdagradGaussianOptimizer = _gaussian("Adagrad")

__getattr__ = _unsupported.module_getattr(
    __name__,
    (
        "DPAdagradOptimizer",
        "DPAdamOptimizer",
        "DPFtrlOptimizer",
        "DPGradientDescentOptimizer",
        "DPRMSPropOptimizer",
        "DPFtrlGaussianOptimizer",
        "DPRMSPropGaussianOptimizer",
        "make_optimizer_class",
        "make_gaussian_optimizer_class",
    ),
)
