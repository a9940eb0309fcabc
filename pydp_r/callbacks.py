"""Keras callbacks for DP training: log the privacy spent, stop before a budget is exceeded."""

from __future__ import annotations

import math
from typing import Any

import keras

from pydp_r import accounting

_DP_ATTRIBUTES = ("noise_multiplier", "l2_norm_clip", "num_microbatches")


def _dp_optimizer_of(model: keras.Model) -> Any:
    """The model's DP optimizer (looking inside a loss-scale wrapper), or a ValueError."""
    optimizer = getattr(model, "optimizer", None)
    for candidate in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if candidate is not None and all(hasattr(candidate, a) for a in _DP_ATTRIBUTES):
            return candidate
    raise ValueError(
        "PrivacyBudget needs a model compiled with a DP optimizer (one with attributes "
        f"{', '.join(_DP_ATTRIBUTES)}, e.g. pydp_r.DPAdam); received optimizer "
        f"{type(optimizer).__name__}."
    )


class PrivacyBudget(keras.callbacks.Callback):
    """Adds the epsilon spent so far to the epoch logs; optionally stops at a budget.

    At each epoch end `logs["epsilon"]` is set to `pydp_r.compute_epsilon` for the epochs
    completed so far, counting those of earlier `fit()` calls with this same instance, so it
    shows in the progress bar and in `history.history["epsilon"]`. The noise multiplier,
    microbatching and gradient accumulation are read from the model's DP optimizer.

    The accounting assumes Poisson sampling of rate `batch_size * accumulation / n` and
    `ceil(epochs * n / logical_batch)` noisy steps (see `pydp_r.privacy_statement`); batches
    from `pydp_r.data.sampling.poisson_batches` make that assumption true, shuffled batches
    do not. When the optimizer has taken more steps than that (a final partial batch in every
    epoch makes `ceil(n / batch)` steps per epoch), epsilon is computed for the steps taken,
    so the logged value never understates what was spent.

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Examples per `fit()` batch, integer in [1, n]: the batch size given to
            `fit()` or the dataset, or the expected batch size `sampling_rate * n` with
            `poisson_batches` (not its padded `max_batch_size`). With gradient accumulation
            of k steps the logical batch `batch_size * k` must still be <= n.
        delta: Target delta, in (0, 1).
        target_epsilon: None (only log) or an epsilon budget > 0: training stops at the end
            of the epoch after which one more epoch would exceed it.
        accountant: "rdp" or "pld" (see `compute_epsilon`).

    Attributes:
        epsilon: Epsilon after the latest completed epoch (None before the first).
        epochs_completed: Epochs accounted so far, over all `fit()` calls.

    Raises:
        ValueError: At construction for an argument outside its range; at the start of
            `fit()` when the model has no DP optimizer, or when even the next epoch would
            exceed `target_epsilon`.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        delta: float,
        target_epsilon: float | None = None,
        accountant: str = "rdp",
    ) -> None:
        super().__init__()
        self.n, self.batch_size = accounting._check_n_and_batch_size(n, batch_size)
        self.delta = accounting._check_delta(delta)
        self.target_epsilon = (
            None if target_epsilon is None else accounting._check_target_epsilon(target_epsilon)
        )
        self.accountant = accounting._check_accountant(accountant)
        self.epsilon: float | None = None
        self.epochs_completed = 0
        self._noise_multiplier = 0.0
        self._logical_batch_size = self.batch_size
        self._used_microbatching = False
        self._optimizer: Any = None

    def _epsilon_after(self, epochs: int, steps: int = 0) -> float:
        """Epsilon after `epochs` epochs, or after `steps` noisy steps if those are more."""
        epochs_of_steps = steps * self._logical_batch_size / self.n
        return accounting.compute_epsilon(
            self.n,
            self._logical_batch_size,
            self._noise_multiplier,
            max(epochs, epochs_of_steps),
            self.delta,
            accountant=self.accountant,
            used_microbatching=self._used_microbatching,
        )

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = _dp_optimizer_of(self.model)
        self._optimizer = optimizer
        self._noise_multiplier = float(optimizer.noise_multiplier)
        accumulation = getattr(optimizer, "gradient_accumulation_steps", None) or 1
        self._logical_batch_size = self.batch_size * int(accumulation)
        if self._logical_batch_size > self.n:
            raise ValueError(
                f"batch_size * gradient_accumulation_steps must be <= n = {self.n}; received "
                f"{self.batch_size} * {accumulation} = {self._logical_batch_size}."
            )
        num_microbatches = optimizer.num_microbatches
        self._used_microbatching = (
            num_microbatches is not None and int(num_microbatches) != self.batch_size
        )
        if self.target_epsilon is not None:
            next_epsilon = self._epsilon_after(self.epochs_completed + 1)
            if next_epsilon > self.target_epsilon:
                raise ValueError(
                    f"target_epsilon={self.target_epsilon!r} would be exceeded by the next "
                    f"epoch (epoch {self.epochs_completed + 1} gives epsilon {next_epsilon:.4g} "
                    f"at delta={self.delta!r}); raise target_epsilon or the noise multiplier, "
                    "or lower the batch size."
                )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_completed += 1
        # Noisy (logical) steps the optimizer has taken, in this and earlier fit() calls.
        steps = int(self._optimizer.iterations)
        self.epsilon = self._epsilon_after(self.epochs_completed, steps)
        if logs is not None:
            logs["epsilon"] = self.epsilon
        if self.target_epsilon is not None:
            steps_per_epoch = math.ceil(steps / self.epochs_completed)
            upcoming = self._epsilon_after(self.epochs_completed + 1, steps + steps_per_epoch)
            if upcoming > self.target_epsilon:
                self.model.stop_training = True
