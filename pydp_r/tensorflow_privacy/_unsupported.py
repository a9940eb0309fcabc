"""TF Privacy 0.9.0 names and modules that pydp_r does not provide, each with why and instead.

Importing one raises `NotSupportedOnKeras3Error` (an `ImportError`) carrying that message, so a
migrated script fails at its import line with a reason instead of an `AttributeError` later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

_PREFIX = "pydp_r.tensorflow_privacy."


class NotSupportedOnKeras3Error(ImportError):
    """Raised on importing a TF Privacy name or module that pydp_r does not support on Keras 3."""


class _Reason(NamedTuple):
    why: str
    instead: str


_DP_QUERY = _Reason(
    "TF Privacy's DPQuery framework (privacy.dp_query) is not available: pydp_r's optimizers "
    "implement one query, the Gaussian sum query (clip each example's gradient, add Gaussian "
    "noise to the sum).",
    "the Gaussian-query optimizers DPKerasSGDOptimizer, DPKerasAdamOptimizer, "
    "DPKerasAdagradOptimizer, or pydp_r.make_dp_optimizer_class(keras_optimizer_class)",
)
_TREE_AGGREGATION = _Reason(
    "DP-FTRL with tree aggregation is not implemented in pydp_r.",
    "DP-SGD: DPKerasSGDOptimizer and the other DPKeras* optimizers",
)
_ESTIMATOR = _Reason(
    "tf.estimator was removed from TensorFlow 2.16, and pydp_r trains Keras 3 models.",
    "a Keras model compiled with a DP optimizer (DPKerasAdamOptimizer, ...), or DPModel / "
    "DPSequential from privacy.keras_models.dp_keras_model",
)
_LOGISTIC_REGRESSION = _Reason(
    "TF Privacy's private logistic regression (objective perturbation) is not implemented.",
    "a one-layer keras.Sequential softmax model compiled with DPKerasSGDOptimizer",
)
_V1_OPTIMIZER = _Reason(
    "tf.compat.v1.train optimizers cannot train Keras 3 models, and this name takes a "
    "tf.compat.v1 optimizer class or a DPQuery.",
    "pydp_r.make_dp_optimizer_class(keras.optimizers.<Name>), or the Gaussian names "
    "DPGradientDescentGaussianOptimizer, DPAdamGaussianOptimizer, DPAdagradGaussianOptimizer",
)
_REGISTRY = _Reason(
    "TF Privacy's fast gradient clipping needs a layer registry passed in; pydp_r chooses its "
    "ghost-norm clipping (pydp_r.step.fast_clipping) by itself for the layers it supports.",
    "DPModel / DPSequential without layer_registry, or any model compiled with a pydp_r DP "
    "optimizer: the fast path is taken automatically",
)

UNSUPPORTED: dict[str, _Reason] = {
    # Modules, by their path under tensorflow_privacy.
    "privacy.dp_query": _DP_QUERY,
    "privacy.estimators": _ESTIMATOR,
    "privacy.fast_gradient_clipping": _REGISTRY,
    "privacy.sparsity_preserving_noise": _Reason(
        "Sparsity-preserving noise for embeddings is not implemented in pydp_r.",
        "the DPKeras* optimizers (dense noise on every gradient entry)",
    ),
    "privacy.logistic_regression": _LOGISTIC_REGRESSION,
    "privacy.membership_inference_attack": _Reason(
        "TF Privacy's membership inference attack library is not ported.",
        "pydp_r.audit.membership (loss-threshold attack with a confidence bound) or `pydp-r audit`",
    ),
    "privacy.privacy_tests": _Reason(
        "TF Privacy's privacy_tests (membership inference, secret sharer) are not ported.",
        "pydp_r.audit: membership for membership inference, canary for secret-sharer exposure, "
        "step for an epsilon lower bound",
    ),
    "privacy.bolt_on": _Reason(
        "Bolt-on (output perturbation) models are not implemented (TF Privacy 0.9.0 does not "
        "ship them either).",
        "DP-SGD with the DPKeras* optimizers",
    ),
    "privacy.analysis.rdp_accountant": _Reason(
        "TF Privacy removed its own RDP accountant in favour of dp_accounting.",
        "dp_accounting.rdp.RdpAccountant, or pydp_r.compute_epsilon(..., accountant='rdp')",
    ),
    "privacy.analysis.gdp_accountant": _Reason(
        "The Gaussian-DP accountant is not ported.",
        "dp_accounting's RDP or PLD accountant (pydp_r.compute_epsilon)",
    ),
    "privacy.analysis.tree_aggregation_accountant": _TREE_AGGREGATION,
    "privacy.analysis.tensor_buffer": _Reason(
        "TensorBuffer belongs to TF Privacy's TF1-style query and ledger machinery.",
        "a Python list or tf.TensorArray",
    ),
    "privacy.optimizers.dp_optimizer_keras_sparse": _Reason(
        "Sparse-gradient DP optimizers are not implemented.",
        "the DPKeras* optimizers, which noise every gradient entry",
    ),
    "privacy.optimizers.clip_and_aggregate_gradients": _Reason(
        "TF Privacy's internal clipping helper is not part of pydp_r's API.",
        "optimizer.compute_dp_gradients(loss_fn, inputs, variables) of a pydp_r DP optimizer",
    ),
    # Names, by module (or top level) and name.
    "compute_rdp_tree_restart": _TREE_AGGREGATION,
    "compute_rdp_single_tree": _TREE_AGGREGATION,
    "compute_zcdp_single_tree": _TREE_AGGREGATION,
    "DNNClassifier": _ESTIMATOR,
    "v1.DNNClassifierV1": _ESTIMATOR,
    "GenericDPAdagradOptimizer": _DP_QUERY,
    "GenericDPAdamOptimizer": _DP_QUERY,
    "GenericDPSGDOptimizer": _DP_QUERY,
    "make_keras_generic_optimizer_class": _DP_QUERY,
    "make_gaussian_query_optimizer_class": _DP_QUERY,
    "DPFTRLTreeAggregationOptimizer": _TREE_AGGREGATION,
    "make_dpftrl_tree_aggregation_optimizer_class": _TREE_AGGREGATION,
    "linearly_separable_labeled_examples": _LOGISTIC_REGRESSION,
    "synthetic_linearly_separable_data": _LOGISTIC_REGRESSION,
    "logistic_objective_perturbation": _LOGISTIC_REGRESSION,
    "logistic_dpsgd": _LOGISTIC_REGRESSION,
    "single_layer_softmax_classifier": _LOGISTIC_REGRESSION,
    "DPAdagradOptimizer": _V1_OPTIMIZER,
    "DPAdamOptimizer": _V1_OPTIMIZER,
    "DPFtrlOptimizer": _V1_OPTIMIZER,
    "DPGradientDescentOptimizer": _V1_OPTIMIZER,
    "DPRMSPropOptimizer": _V1_OPTIMIZER,
    "make_optimizer_class": _V1_OPTIMIZER,
    "make_gaussian_optimizer_class": _V1_OPTIMIZER,
    "make_vectorized_optimizer_class": _V1_OPTIMIZER,
    "DPRMSPropGaussianOptimizer": _Reason(
        "tf.compat.v1.train.RMSPropOptimizer starts its mean-square accumulator at 1, Keras 3's "
        "RMSprop at 0, so no Keras 3 optimizer takes the same steps.",
        "pydp_r.DPRMSprop(l2_norm_clip, noise_multiplier, num_microbatches, learning_rate=..., "
        "rho=decay, momentum=..., epsilon=...), noting the different first steps",
    ),
    "DPFtrlGaussianOptimizer": _Reason(
        "tf.compat.v1.train.FtrlOptimizer's arguments do not map one to one onto Keras 3's Ftrl.",
        "pydp_r.make_dp_optimizer_class(keras.optimizers.Ftrl) with Keras 3's argument names",
    ),
}

# The DPQuery classes exported at TF Privacy's top level.
for _name in (
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
):
    UNSUPPORTED[_name] = _DP_QUERY


def error(key: str, tf_privacy_path: str | None = None) -> NotSupportedOnKeras3Error:
    """The error for a TF Privacy module or name that pydp_r does not support.

    Args:
        key: A key of `UNSUPPORTED`: a module path under `tensorflow_privacy` such as
            `"privacy.dp_query"`, or a name such as `"DPQuery"`.
        tf_privacy_path: Where the name lives under `tensorflow_privacy`, for the message
            (default: `key`).
    """
    reason = UNSUPPORTED[key]
    path = tf_privacy_path or key
    return NotSupportedOnKeras3Error(
        f"tensorflow_privacy.{path} is not supported by pydp_r on Keras 3: {reason.why} "
        f"Use instead: {reason.instead}. (See docs/migration.md.)",
        name=_PREFIX + path,
    )


def raise_for_module(module_name: str) -> None:
    """Raise the error for an unsupported module; called from that module's body.

    Args:
        module_name: The module's `__name__`, e.g. `"pydp_r.tensorflow_privacy.privacy.dp_query"`.
    """
    raise error(module_name.removeprefix(_PREFIX))


def module_getattr(module_name: str, unsupported_names: tuple[str, ...]) -> Callable[[str], object]:
    """A PEP 562 `__getattr__` raising the error for a module's unsupported names.

    Args:
        module_name: The module's `__name__`.
        unsupported_names: Names TF Privacy's module defines and pydp_r's does not; each is
            looked up in `UNSUPPORTED` under "<module path>.<name>", then under "<name>".

    Returns:
        The function to bind as the module's `__getattr__`.
    """
    module_path = module_name.removeprefix("pydp_r.tensorflow_privacy").removeprefix(".")

    def __getattr__(name: str) -> object:
        if name in unsupported_names:
            path = f"{module_path}.{name}" if module_path else name
            raise error(path if path in UNSUPPORTED else name, path)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
