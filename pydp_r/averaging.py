"""Parameter averaging for (DP) training: an exponential moving average of the weights.

With noisy gradients the last iterate of DP-SGD wanders around a good region; the average of
recent iterates sits closer to its centre (De et al. 2022 use an EMA for all their DP
results). Averaging only combines models that DP-SGD already released (its guarantee covers
every intermediate model), so it is post-processing: it costs no privacy.

Keras' own `use_ema=True` (which pydp_r's DP optimizers pass through) has no warm-up: its
average starts at the first iterate and keeps `ema_momentum ** steps` of it, so a short run
(a few hundred steps at momentum 0.99) stays biased towards the random initialization.
`ParameterAveraging` warms up as De et al. do, and evaluates validation data with the
averaged weights.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from pydp_r._checks import check_count, check_real


class ParameterAveraging(keras.callbacks.Callback):
    """Keeps an exponential moving average (EMA) of the trainable weights during `fit()`.

    After each training batch t (counting from 1 over all `fit()` calls with this instance)
    every average moves towards the current weights:

        average = d_t * average + (1 - d_t) * weights,  d_t = min(decay, (1 + t) / (warmup + t))

    so early, poor iterates are forgotten quickly (`warmup` = 10 as in De et al. 2022; 1 turns
    the warm-up off after the first step). Validation inside `fit()` runs with the averaged
    weights, then the raw weights are put back so training continues from them unchanged.
    When training ends the model keeps the averaged weights, so `evaluate()`, `predict()`
    and `save()` see them; `raw_weights` holds the last iterate's values.

    Non-trainable variables (e.g. BatchNormalization statistics) are not averaged.

    Args:
        decay: Largest EMA decay, in [0, 1). The average spans about 1 / (1 - decay) steps:
            0.99 suits runs of a few hundred steps, 0.999 or more runs of thousands.
        warmup: Warm-up constant, integer >= 1 (see the formula above).

    Attributes:
        steps: Batches averaged so far.
        raw_weights: After training, the values of the trainable variables before they were
            replaced by their averages (a list of NumPy arrays); None before.

    Raises:
        ValueError: For an argument outside its range.
    """

    def __init__(self, decay: float = 0.99, warmup: int = 10) -> None:
        super().__init__()
        self.decay = check_real(
            "decay", decay, "a number in [0, 1)", lambda v: 0 <= v < 1 and math.isfinite(v)
        )
        self.warmup = check_count("warmup", warmup)
        self.steps = 0
        self.raw_weights: list[Any] | None = None
        self._averages: list[keras.Variable] | None = None
        self._saved_raw: list[Any] | None = None
        self._in_fit = False

    def _variables(self) -> list[keras.Variable]:
        return list(self.model.trainable_variables)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        variables = self._variables()
        if self._averages is None or len(self._averages) != len(variables):
            self._averages = [
                # A NumPy copy: given the variable's own value, Keras may share its storage.
                keras.Variable(
                    keras.ops.convert_to_numpy(variable.value), trainable=False, name="average"
                )
                for variable in variables
            ]
        elif self.raw_weights is not None:
            # A new fit() continues from the last iterate, not from the averaged weights.
            for variable, raw in zip(variables, self.raw_weights, strict=True):
                variable.assign(raw)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (self.warmup + self.steps))
        for average, variable in zip(self._averages, self._variables(), strict=True):
            average.assign(decay * average + (1 - decay) * variable.value)

    def _swap_in_averages(self) -> list[Any]:
        variables = self._variables()
        raw = [keras.ops.convert_to_numpy(variable.value) for variable in variables]
        for variable, average in zip(variables, self._averages, strict=True):
            variable.assign(average.value)
        return raw

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._in_fit and self.steps > 0:
            self._saved_raw = self._swap_in_averages()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._saved_raw is not None:
            for variable, raw in zip(self._variables(), self._saved_raw, strict=True):
                variable.assign(raw)
            self._saved_raw = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False
        if self.steps > 0:
            self.raw_weights = self._swap_in_averages()


__all__ = ["ParameterAveraging"]
