"""TF Privacy's `privacy.optimizers` package, on pydp_r's Keras 3 DP optimizers."""

from pydp_r.tensorflow_privacy._lazy import package_getattr

__getattr__ = package_getattr(
    __name__,
    (
        "dp_optimizer",
        "dp_optimizer_keras",
        "dp_optimizer_keras_vectorized",
        "dp_optimizer_vectorized",
    ),
    ("clip_and_aggregate_gradients", "dp_optimizer_keras_sparse"),
)
