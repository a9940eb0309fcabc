"""pydp_r: differentially private deep learning for Keras 3 (TensorFlow backend).

Swap the optimizer to train privately::

    model.compile(optimizer=pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1), loss="mse")
"""

from pydp_r import _keras_compat, data
from pydp_r import train_step as _train_step
from pydp_r.accounting import (
    compute_dp_sgd_privacy,
    compute_epsilon,
    compute_noise_multiplier,
    privacy_statement,
)
from pydp_r.batch_norm import replace_batch_norm
from pydp_r.callbacks import PrivacyBudget
from pydp_r.optimizers import (
    DPSGD,
    DPAdagrad,
    DPAdam,
    DPKerasAdagradOptimizer,
    DPKerasAdamOptimizer,
    DPKerasRMSpropOptimizer,
    DPKerasSGDOptimizer,
    DPOptimizerMixin,
    DPRMSprop,
    NoPrivacyWarning,
    make_dp_optimizer_class,
)

__version__ = "0.1.0"

_keras_compat.install()
_train_step.install()

__all__ = [
    "DPAdagrad",
    "DPAdam",
    "DPKerasAdagradOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasRMSpropOptimizer",
    "DPKerasSGDOptimizer",
    "DPOptimizerMixin",
    "DPRMSprop",
    "DPSGD",
    "NoPrivacyWarning",
    "PrivacyBudget",
    "__version__",
    "compute_dp_sgd_privacy",
    "data",
    "compute_epsilon",
    "compute_noise_multiplier",
    "make_dp_optimizer_class",
    "privacy_statement",
    "replace_batch_norm",
]
