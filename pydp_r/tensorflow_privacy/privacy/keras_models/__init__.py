"""TF Privacy's `privacy.keras_models` package, on pydp_r's DP training step."""

from pydp_r.tensorflow_privacy._lazy import package_getattr

__getattr__ = package_getattr(__name__, ("dp_keras_model",))
