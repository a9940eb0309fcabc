"""pydp_r: differentially private deep learning for Keras 3 (TensorFlow backend).

Swap the optimizer to train privately::

    model.compile(optimizer=pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1), loss="mse")

Names are imported on first use (PEP 562), so `pydp_r.compute_epsilon` and the command line
load only the accounting (dp-accounting, no TensorFlow); a DP optimizer loads Keras.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

from pydp_r._versions import ONEDNN_SAFE_TENSORFLOW, major_minor

__version__ = "0.1.0"


def _onednn_off_for_old_tensorflow() -> None:
    """Turn oneDNN's kernels off for TensorFlow 2.16-2.20 if TensorFlow is not loaded yet.

    With them on, those releases return wrong vectorized per-example gradients (see
    `pydp_r._keras_seam.check_tensorflow`, which refuses that combination). A value the user
    set for TF_ENABLE_ONEDNN_OPTS is left alone; importing TensorFlow is left for later.
    """
    if "tensorflow" in sys.modules or "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return
    for distribution in ("tensorflow", "tensorflow-cpu"):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        if major_minor(version) < ONEDNN_SAFE_TENSORFLOW:
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
        return


_onednn_off_for_old_tensorflow()


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Imports `pydp_r.optimizers` (whose classes register with Keras' serialization) right
    after Keras itself is imported, so `keras.models.load_model` finds `DPAdam` & co. after a
    plain `import pydp_r`, whatever the order of the imports, without loading TensorFlow
    before the user does."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        keras_exec_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            keras_exec_module(module)
            importlib.import_module("pydp_r.optimizers")

        spec.loader.exec_module = exec_module
        return spec


def _register_with_keras() -> None:
    """Register the DP optimizers with Keras now if it is loaded, else once it is."""
    if "keras" in sys.modules:
        importlib.import_module("pydp_r.optimizers")
    elif not any(isinstance(finder, _RegisterWhenKerasLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenKerasLoads())


_register_with_keras()

# Public name -> module that defines it.
_LAZY_NAMES = {
    "compute_dp_sgd_privacy": "pydp_r.accounting",
    "compute_epsilon": "pydp_r.accounting",
    "compute_noise_multiplier": "pydp_r.accounting",
    "privacy_statement": "pydp_r.accounting",
    "calibrate_noise_multiplier": "pydp_r.accounting",
    "group_privacy_epsilon": "pydp_r.accounting",
    "group_noise_multiplier": "pydp_r.accounting",
    "user_epsilon": "pydp_r.accounting",
    "PrivacyLedger": "pydp_r.ledger",
    "replace_batch_norm": "pydp_r.batch_norm",
    "PrivacyBudget": "pydp_r.callbacks",
    "ShuffledBatchesWarning": "pydp_r.callbacks",
    "DPSGD": "pydp_r.optimizers",
    "DPAdagrad": "pydp_r.optimizers",
    "DPAdam": "pydp_r.optimizers",
    "DPKerasAdagradOptimizer": "pydp_r.optimizers",
    "DPKerasAdamOptimizer": "pydp_r.optimizers",
    "DPKerasRMSpropOptimizer": "pydp_r.optimizers",
    "DPKerasSGDOptimizer": "pydp_r.optimizers",
    "DPOptimizerMixin": "pydp_r.optimizers",
    "DPRMSprop": "pydp_r.optimizers",
    "NoPrivacyWarning": "pydp_r.optimizers",
    "make_dp_optimizer_class": "pydp_r.optimizers",
    "DPTrainingPlan": "pydp_r.planner",
    "PlanCandidate": "pydp_r.planner",
    "plan_dp_training": "pydp_r.planner",
    "PrivacyRoute": "pydp_r.planner",
    "UserLevelPlan": "pydp_r.planner",
    "ParameterAveraging": "pydp_r.averaging",
    "clipping_report": "pydp_r.step.fast_clipping",
}
_LAZY_MODULES = ("accounting", "audit", "data", "ledger", "tensorflow_privacy")

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
    "DPTrainingPlan",
    "NoPrivacyWarning",
    "ParameterAveraging",
    "PlanCandidate",
    "PrivacyRoute",
    "PrivacyBudget",
    "PrivacyLedger",
    "ShuffledBatchesWarning",
    "UserLevelPlan",
    "__version__",
    "calibrate_noise_multiplier",
    "clipping_report",
    "compute_dp_sgd_privacy",
    "compute_epsilon",
    "compute_noise_multiplier",
    "data",
    "group_noise_multiplier",
    "group_privacy_epsilon",
    "make_dp_optimizer_class",
    "plan_dp_training",
    "privacy_statement",
    "replace_batch_norm",
    "user_epsilon",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"pydp_r.{name}")
    else:
        raise AttributeError(f"module 'pydp_r' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES, *_LAZY_MODULES})


if TYPE_CHECKING:
    from pydp_r import data
    from pydp_r.accounting import (
        calibrate_noise_multiplier,
        compute_dp_sgd_privacy,
        compute_epsilon,
        compute_noise_multiplier,
        group_noise_multiplier,
        group_privacy_epsilon,
        privacy_statement,
        user_epsilon,
    )
    from pydp_r.averaging import ParameterAveraging
    from pydp_r.batch_norm import replace_batch_norm
    from pydp_r.callbacks import PrivacyBudget, ShuffledBatchesWarning
    from pydp_r.ledger import PrivacyLedger
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
    from pydp_r.planner import (
        DPTrainingPlan,
        PlanCandidate,
        PrivacyRoute,
        UserLevelPlan,
        plan_dp_training,
    )
    from pydp_r.step.fast_clipping import clipping_report
