"""TF Privacy's `tensorflow_privacy.privacy` package on pydp_r (see `pydp_r.tensorflow_privacy`)."""

from pydp_r.tensorflow_privacy._lazy import package_getattr

__getattr__ = package_getattr(
    __name__,
    ("analysis", "keras_models", "optimizers"),
    (
        "bolt_on",
        "dp_query",
        "estimators",
        "fast_gradient_clipping",
        "logistic_regression",
        "membership_inference_attack",
        "privacy_tests",
        "sparsity_preserving_noise",
    ),
)
