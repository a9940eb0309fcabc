"""TF Privacy's public import paths on pydp_r: migrate a TF Privacy script by renaming one package.

Rewrite `from tensorflow_privacy` to `from pydp_r.tensorflow_privacy` and `import
tensorflow_privacy` to `from pydp_r import tensorflow_privacy`; the rest of the script stays.
This package mirrors TF Privacy 0.9.0's top-level names and its modules
`privacy.optimizers.dp_optimizer_keras`, `privacy.optimizers.dp_optimizer_keras_vectorized`,
`privacy.optimizers.dp_optimizer` (2019's Gaussian optimizers),
`privacy.keras_models.dp_keras_model`, `privacy.analysis.compute_dp_sgd_privacy`,
`privacy.analysis.compute_dp_sgd_privacy_lib` and `v1`, built on pydp_r's Keras 3 DP
optimizers and on `dp_accounting`. What Keras 3 cannot support raises
`NotSupportedOnKeras3Error` (an `ImportError`) on import, saying why and what to use instead;
docs/migration.md lists every symbol.

Names resolve lazily (PEP 562): the accounting modules import no deep-learning framework.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydp_r.tensorflow_privacy import _unsupported
from pydp_r.tensorflow_privacy._unsupported import NotSupportedOnKeras3Error

_LIB = "pydp_r.tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib"
_KERAS_OPTIMIZERS = "pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer_keras"
_VECTORIZED = "pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer_keras_vectorized"
_KERAS_MODELS = "pydp_r.tensorflow_privacy.privacy.keras_models.dp_keras_model"

# Top-level name -> module defining it, as in TF Privacy 0.9.0's __init__.
_LAZY_NAMES = {
    "compute_dp_sgd_privacy": _LIB,
    "compute_dp_sgd_privacy_statement": _LIB,
    "DPModel": _KERAS_MODELS,
    "DPSequential": _KERAS_MODELS,
    "make_dp_model_class": _KERAS_MODELS,
    "DPKerasAdagradOptimizer": _KERAS_OPTIMIZERS,
    "DPKerasAdamOptimizer": _KERAS_OPTIMIZERS,
    "DPKerasSGDOptimizer": _KERAS_OPTIMIZERS,
    "make_keras_optimizer_class": _KERAS_OPTIMIZERS,
    "VectorizedDPKerasAdagradOptimizer": _VECTORIZED,
    "VectorizedDPKerasAdamOptimizer": _VECTORIZED,
    "VectorizedDPKerasSGDOptimizer": _VECTORIZED,
    "make_vectorized_keras_optimizer_class": _VECTORIZED,
}
_SUBMODULES = ("privacy", "v1")

# TF Privacy 0.9.0's top-level names that pydp_r does not provide.
_UNSUPPORTED_NAMES = (
    "compute_rdp_tree_restart",
    "compute_rdp_single_tree",
    "compute_zcdp_single_tree",
    "DPQuery",
    "SumAggregationDPQuery",
    "DiscreteGaussianSumQuery",
    "DistributedDiscreteGaussianSumQuery",
    "DistributedSkellamSumQuery",
    "GaussianSumQuery",
    "NestedQuery",
    "NoPrivacyAverageQuery",
    "NoPrivacySumQuery",
    "NormalizedQuery",
    "QuantileEstimatorQuery",
    "NoPrivacyQuantileEstimatorQuery",
    "QuantileAdaptiveClipSumQuery",
    "QAdaClipTreeResSumQuery",
    "restart_query",
    "tree_aggregation",
    "RestartQuery",
    "TreeCumulativeSumQuery",
    "TreeResidualSumQuery",
    "TreeRangeSumQuery",
    "DNNClassifier",
    "GenericDPAdagradOptimizer",
    "GenericDPAdamOptimizer",
    "GenericDPSGDOptimizer",
    "DPFTRLTreeAggregationOptimizer",
    "make_gaussian_query_optimizer_class",
    "make_keras_generic_optimizer_class",
    "linearly_separable_labeled_examples",
    "synthetic_linearly_separable_data",
    "logistic_objective_perturbation",
    "logistic_dpsgd",
    "single_layer_softmax_classifier",
)

_unsupported_getattr = _unsupported.module_getattr(__name__, _UNSUPPORTED_NAMES)

__all__ = ["NotSupportedOnKeras3Error", *_LAZY_NAMES, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        return _unsupported_getattr(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
