"""TF Privacy's `privacy.optimizers.dp_optimizer_keras_vectorized` on Keras 3.

pydp_r's DP optimizers are vectorized already (`tf.vectorized_map` or ghost norms), so the
`VectorizedDPKeras*` classes are pydp_r's `DPSGD`, `DPAdam` and `DPAdagrad` with TF Privacy's
vectorized signature `(l2_norm_clip, noise_multiplier, num_microbatches=None,
unconnected_gradients_to_zero=False, *args, **kwargs)`: the fourth positional argument is
`unconnected_gradients_to_zero` (accepted, no effect: the noise makes every variable's
gradient defined), not `gradient_accumulation_steps`, and the rest go to the Keras 3 optimizer.
"""

from __future__ import annotations

from pydp_r import optimizers
from pydp_r.tensorflow_privacy.privacy.optimizers import _translated

__all__ = [
    "VectorizedDPKerasAdagradOptimizer",
    "VectorizedDPKerasAdamOptimizer",
    "VectorizedDPKerasSGDOptimizer",
    "make_vectorized_keras_optimizer_class",
]


def _vectorized(class_name: str, dp_base: type) -> type:
    doc = (
        f"TF Privacy's `{class_name}` on Keras 3: a `pydp_r.{dp_base.__name__}` with the "
        "vectorized signature `(l2_norm_clip, noise_multiplier, num_microbatches=None, "
        "unconnected_gradients_to_zero=False, *args, **kwargs)`; `*args, **kwargs` go to the "
        "Keras 3 optimizer.\n"
    )
    return _translated.make_translated_class(
        class_name,
        dp_base,
        ("unconnected_gradients_to_zero",),
        _translated.keras_arguments_of(dp_base),
        {},
        doc,
        __name__,
    )


VectorizedDPKerasSGDOptimizer = _vectorized("VectorizedDPKerasSGDOptimizer", optimizers.DPSGD)
VectorizedDPKerasAdamOptimizer = _vectorized("VectorizedDPKerasAdamOptimizer", optimizers.DPAdam)
VectorizedDPKerasAdagradOptimizer = _vectorized(
    "VectorizedDPKerasAdagradOptimizer", optimizers.DPAdagrad
)

_VECTORIZED_CLASSES: dict[type, type] = {}


def make_vectorized_keras_optimizer_class(cls: type) -> type:
    """The vectorized DP-SGD version of a Keras 3 optimizer class, with TF Privacy's signature.

    Args:
        cls: A subclass of `keras.optimizers.Optimizer`.

    Returns:
        A subclass of `pydp_r.make_dp_optimizer_class(cls)` named `"VectorizedDP" +
        cls.__name__`, constructor `(l2_norm_clip, noise_multiplier, num_microbatches=None,
        unconnected_gradients_to_zero=False, *args, **kwargs)`; built once per class.

    Raises:
        ValueError: When `cls` is not a Keras 3 optimizer class or is already a DP one.
    """
    from pydp_r.tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

    if cls not in _VECTORIZED_CLASSES:
        dp_base = dp_optimizer_keras.make_keras_optimizer_class(cls)
        _VECTORIZED_CLASSES[cls] = _vectorized("VectorizedDP" + cls.__name__, dp_base)
    return _VECTORIZED_CLASSES[cls]
