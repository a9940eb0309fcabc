"""Per-example gradient norms from layer activations ("ghost norms"), one module per layer type.

Importing this package registers the rules (Dense, EinsumDense, convolutions, Embedding,
LayerNormalization, GroupNormalization, SimpleRNN, LSTM) and declares Keras' other per-example
layers (`per_example`); the registry alone decides which models the fast path takes. A user's
own layer type joins with a rule (`@register(MyLayer)`) or with `register_per_example(MyLayer)`,
which vectorizes it alone over the batch.
"""

from pydp_r.grad_norms import (  # noqa: F401  (registration)
    conv,
    dense,
    einsum_dense,
    embedding,
    layer_norm,
    operations,
    per_example,
    rnn,
    wrappers,
)
from pydp_r.grad_norms.registry import (
    RULE,
    SUBLAYERS,
    WHOLE,
    LayerRule,
    UnitGradients,
    gradients_squared_norms,
    per_example_kind,
    per_example_types,
    register,
    register_per_example,
    registered_types,
    rule_for,
)

__all__ = [
    "RULE",
    "SUBLAYERS",
    "WHOLE",
    "LayerRule",
    "UnitGradients",
    "gradients_squared_norms",
    "per_example_kind",
    "per_example_types",
    "register",
    "register_per_example",
    "registered_types",
    "rule_for",
]
