"""The DP training step: how `model.fit()` of a model with a DP optimizer trains privately.

One step, data flow (each a named function in `train_step.py`)::

    batch ─ _prepared_batch: unpack, drop NaN/inf examples, pad to whole units
          ─ _clipped_gradient_sums: per-unit gradients clipped to C and summed
                fast path   fast_clipping.py (layer rules in pydp_r/grad_norms/)
                general     clipping.py (tf.vectorized_map over units)
          ─ optimizer.private_gradients: + N(0, (sigma C)^2), / units, release counted
          ─ optimizer.apply_gradients: only those exact gradients
          ─ _reported_metrics: loss and metrics over the real rows

`fit.py` runs before Keras' `fit()`: it describes the input for the privacy ledger and adds
the `LedgerRecorder` (pydp_r/callbacks.py), which attributes the optimizer's counted releases to
what ran (pydp_r/ledger.py). `install()` routes Keras to both through the one seam,
pydp_r/_keras_seam.py; a DP optimizer calls it when it is made.
"""

from __future__ import annotations

_installed = False


def install() -> None:
    """Route `fit()` and `train_step` of models compiled with a DP optimizer through the DP
    step (idempotent). Other models run Keras' own step; see `_keras_seam.install` for the
    two multi-worker work-arounds it applies to every model."""
    global _installed
    if _installed:
        return
    from pydp_r import _keras_seam
    from pydp_r.step.fit import before_fit
    from pydp_r.step.train_step import dp_train_step, uses_dp

    _keras_seam.install(uses_dp, dp_train_step, before_fit)
    _installed = True
