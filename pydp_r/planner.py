"""Plan a DP-SGD run: batch size, noise multiplier and steps for a target epsilon.

Given the number of training examples, the privacy budget (epsilon at delta) and the epochs
one can afford, `plan_dp_training` calibrates the noise multiplier for each candidate batch
size with `pydp_r.accounting.compute_noise_multiplier` (Poisson sampling, RDP or PLD
accountant) and picks the batch whose steps are least noisy among those that still leave
enough steps to train.

How noisy a step is: the *noise-to-signal ratio* of a plan is

    noise_to_signal = noise_multiplier / batch_size
                    = noise std / (batch_size * l2_norm_clip),

the standard deviation (per coordinate) of the noise in the averaged clipped gradient, in
units of the clipping bound, which is the largest norm one example's clipped gradient can
have. At a fixed epsilon and number of epochs the calibrated noise multiplier grows roughly
like the square root of the batch size, so this ratio falls like 1 / sqrt(batch_size): large
batches with calibrated noise are less noisy per step (De et al. 2022), at the price of fewer
steps for the same epochs. The planner therefore takes the largest candidate batch that keeps
at least `min_steps` steps.

This module imports neither TensorFlow nor Keras, so the command line (`pydp-r plan`) and R's
`plan_dp_training()` stay quick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydp_r import _checks as checks
from pydp_r import accounting
from pydp_r._checks import check_count

# Steps a run should keep at least, by default. Measured on the heart-rate demo (3,378
# training sequences, 20 epochs, epsilon 2, validation MAE over two seeds): batches of 128,
# 256 and 512 (528, 264 and 132 steps) trained about equally well (7.1, 6.4, 6.4 bpm), while
# 66 steps (batch 1024, or batch 512 for 10 epochs) lost 5 bpm (11.5 and 11.1 bpm).
DEFAULT_MIN_STEPS = 150

# Smallest default candidate batch size: below it DP-SGD's steps are very noisy whatever
# the budget.
_SMALLEST_DEFAULT_BATCH = 16


@dataclass(frozen=True)
class PlanCandidate:
    """One batch size with its calibrated noise.

    Attributes:
        batch_size: Expected examples per step (Poisson sampling rate times n), in [1, n].
        noise_multiplier: Smallest noise std over `l2_norm_clip` meeting the target, > 0.
        steps: Noisy steps the run takes, `ceil(epochs * n / batch_size)`.
        epsilon: Epsilon of this set-up at the plan's delta, <= the target.
        noise_to_signal: `noise_multiplier / batch_size` (see the module docstring).
    """

    batch_size: int
    noise_multiplier: float
    steps: int
    epsilon: float
    noise_to_signal: float


@dataclass(frozen=True)
class DPTrainingPlan:
    """A suggested DP-SGD set-up and the alternatives it was chosen from.

    Attributes:
        n: Number of training examples.
        target_epsilon: The epsilon budget at `delta`.
        epochs: Passes over the data.
        delta: Target delta.
        accountant: "rdp" or "pld", the accountant that calibrated the noise.
        min_steps: Fewest steps a chosen plan should keep.
        batch_size, noise_multiplier, steps, epsilon, noise_to_signal: Those of the chosen
            candidate (see `PlanCandidate`).
        sampling_rate: `batch_size / n`, what to pass to `pydp_r.data.poisson_batches`.
        candidates: Every candidate considered, by increasing batch size.
        too_many_steps: Batch sizes left out because they make more than
            `pydp_r.accounting.MAX_STEPS` steps, by increasing size.
    """

    n: int
    target_epsilon: float
    epochs: float
    delta: float
    accountant: str
    min_steps: int
    batch_size: int
    noise_multiplier: float
    steps: int
    epsilon: float
    noise_to_signal: float
    sampling_rate: float
    candidates: tuple[PlanCandidate, ...]
    too_many_steps: tuple[int, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"DP-SGD plan for n = {self.n} examples, epsilon <= {self.target_epsilon:g} at "
            f"delta = {self.delta:g}, {self.epochs:g} epochs ({self.accountant.upper()} "
            "accountant, Poisson sampling):",
            f"  batch size        {self.batch_size} (sampling rate {self.sampling_rate:.4g})",
            f"  noise multiplier  {self.noise_multiplier:.4g}",
            f"  steps             {self.steps}",
            f"  epsilon           {self.epsilon:.4g}",
            f"  noise-to-signal   {self.noise_to_signal:.3g} (noise std / (batch size * clip))",
        ]
        if self.steps < self.min_steps:
            lines.append(
                f"  No candidate keeps {self.min_steps} steps; this is the one with the most. "
                "Train more epochs or allow smaller batches."
            )
        lines += [
            "",
            f"  {'batch':>10} {'noise mult.':>12} {'steps':>8} {'epsilon':>8} {'noise/signal':>13}",
        ]
        for candidate in self.candidates:
            marker = "  <- chosen" if candidate.batch_size == self.batch_size else ""
            lines.append(
                f"  {candidate.batch_size:>10} {candidate.noise_multiplier:>12.4g} "
                f"{candidate.steps:>8} {candidate.epsilon:>8.4g} "
                f"{candidate.noise_to_signal:>13.3g}{marker}"
            )
        if self.too_many_steps:
            lines.append(
                f"  Left out: batch sizes {list(self.too_many_steps)}, which make more than "
                f"{accounting.MAX_STEPS:.0e} steps (more than the accountants handle)."
            )
        lines += [
            "",
            "Chosen: the least noisy step (smallest noise-to-signal) among batches that keep "
            f"at least {self.min_steps} steps. Feed fit() with pydp_r.data.poisson_batches("
            f"data, sampling_rate={self.sampling_rate:.4g}) so that this epsilon holds.",
        ]
        return "\n".join(lines)


def _default_batch_sizes(n: int) -> list[int]:
    """Powers of two from 16 up to n / 2 (or n itself when n < 32)."""
    sizes = []
    size = _SMALLEST_DEFAULT_BATCH
    while size <= n // 2:
        sizes.append(size)
        size *= 2
    return sizes or [min(n, _SMALLEST_DEFAULT_BATCH)]


def _check_batch_sizes(batch_sizes: Any, n: int) -> list[int]:
    if isinstance(batch_sizes, (int, float)):
        batch_sizes = [batch_sizes]
    try:
        sizes = list(batch_sizes)
    except TypeError:
        raise ValueError(
            f"batch_sizes must be a sequence of integers in [1, n] = [1, {n}]; received "
            f"{batch_sizes!r}."
        ) from None
    if not sizes:
        raise ValueError("batch_sizes must hold at least one batch size; received an empty one.")
    checked = []
    for size in sizes:
        size = check_count("batch_sizes", size)
        if size > n:
            raise ValueError(
                f"batch_sizes must be integers in [1, n] = [1, {n}]; received {size!r}."
            )
        checked.append(size)
    return sorted(set(checked))


def plan_dp_training(
    n: int,
    target_epsilon: float,
    epochs: float,
    delta: float,
    batch_sizes: Sequence[int] | None = None,
    min_steps: int = DEFAULT_MIN_STEPS,
    accountant: str = "rdp",
) -> DPTrainingPlan:
    """Suggest a batch size, noise multiplier and step count for a target epsilon.

    For every candidate batch size the noise multiplier is calibrated to `target_epsilon`
    (`compute_noise_multiplier`, Poisson sampling at rate `batch_size / n`). The plan is the
    candidate with the smallest noise-to-signal ratio, `noise_multiplier / batch_size`,
    among those with at least `min_steps` steps; if none has that many, the one with the
    most steps.

    Args:
        n: Number of training examples, integer >= 1.
        target_epsilon: Epsilon budget at `delta`, > 0.
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1); usually below 1 / n.
        batch_sizes: Candidate expected batch sizes, integers in [1, n]. Default: powers of
            two from 16 up to n / 2.
        min_steps: Fewest steps a plan should keep, integer >= 1 (default 150).
        accountant: "rdp" or "pld" (see `pydp_r.compute_epsilon`).

    Returns:
        A `DPTrainingPlan`; `str()` of it is a readable table.

    Raises:
        ValueError: For an argument outside its range, or when no candidate batch size can
            reach `target_epsilon` (from `compute_noise_multiplier`) or all make more than
            `pydp_r.accounting.MAX_STEPS` steps.
    """
    n = check_count("n", n)
    target_epsilon = checks.check_target_epsilon(target_epsilon)
    epochs = checks.check_epochs(epochs)
    delta = checks.check_delta(delta)
    min_steps = check_count("min_steps", min_steps)
    accountant = checks.check_accountant(accountant)
    sizes = _default_batch_sizes(n) if batch_sizes is None else _check_batch_sizes(batch_sizes, n)

    candidates = []
    too_many_steps = []
    unreachable = None
    for batch_size in sizes:
        try:
            steps = accounting.num_steps(n, batch_size, epochs)
        except accounting.TooManyStepsError:  # larger batches take fewer steps: try them
            too_many_steps.append(batch_size)
            continue
        try:
            noise_multiplier = accounting.compute_noise_multiplier(
                n, batch_size, target_epsilon, epochs, delta, accountant=accountant
            )
        except ValueError as error:  # unreachable at this batch size: larger ones neither
            unreachable = str(error)
            break
        candidates.append(
            PlanCandidate(
                batch_size=batch_size,
                noise_multiplier=noise_multiplier,
                steps=steps,
                epsilon=accounting.compute_epsilon(
                    n, batch_size, noise_multiplier, epochs, delta, accountant=accountant
                ),
                noise_to_signal=noise_multiplier / batch_size,
            )
        )
    if not candidates and unreachable is not None:
        raise ValueError(
            f"No batch size in {sizes} reaches target_epsilon={target_epsilon!r}: {unreachable}"
        )
    if not candidates:
        fewest_steps_batch = math.ceil(epochs * n / accounting.MAX_STEPS)
        raise ValueError(
            f"Every batch size in {sizes} makes more than {accounting.MAX_STEPS:.0e} steps "
            f"(epochs * n / batch_size) with n={n!r} and epochs={epochs!r}, more than the "
            f"accountants handle: give batch_sizes >= {fewest_steps_batch} (at most n), or "
            "fewer epochs."
        )
    enough_steps = [c for c in candidates if c.steps >= min_steps]
    if enough_steps:
        chosen = min(enough_steps, key=lambda c: (c.noise_to_signal, -c.steps))
    else:
        chosen = max(candidates, key=lambda c: (c.steps, -c.noise_to_signal))
    return DPTrainingPlan(
        n=n,
        target_epsilon=target_epsilon,
        epochs=epochs,
        delta=delta,
        accountant=accountant,
        min_steps=min_steps,
        batch_size=chosen.batch_size,
        noise_multiplier=chosen.noise_multiplier,
        steps=chosen.steps,
        epsilon=chosen.epsilon,
        noise_to_signal=chosen.noise_to_signal,
        sampling_rate=chosen.batch_size / n,
        candidates=tuple(candidates),
        too_many_steps=tuple(too_many_steps),
    )


__all__ = ["DEFAULT_MIN_STEPS", "DPTrainingPlan", "PlanCandidate", "plan_dp_training"]
