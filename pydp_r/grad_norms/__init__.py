"""Per-example gradient norms from layer activations ("ghost norms"), one module per layer type.

Importing this package registers the rules for Dense, Conv1D/Conv2D, Embedding and
LayerNormalization; other layers fall back to vectorized per-example gradients.
"""

from pydp_r.grad_norms import conv, dense, embedding, layer_norm  # noqa: F401  (registration)
from pydp_r.grad_norms.registry import (
    LayerRule,
    UnitGradients,
    gradients_squared_norms,
    register,
    registered_types,
    rule_for,
)

__all__ = [
    "LayerRule",
    "UnitGradients",
    "gradients_squared_norms",
    "register",
    "registered_types",
    "rule_for",
]
