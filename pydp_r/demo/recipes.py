"""How each model is trained: the settings, the non-private recipe and the calibrated DP one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pydp_r
from pydp_r.planner import plan_dp_training

DELTA = 1e-5
TARGET_EPSILON = 2.0
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
#: Public synthetic subjects whose validation split the recipes are tuned on (`--tune`).
TUNING_SEEDS = (100, 101, 102)
#: What `--tune` searches for each model (same number of candidates for both).
NON_PRIVATE_GRID = {"normalization": ("batch", "none"), "learning_rate": (1e-3, 3e-3, 1e-2)}
PRIVATE_GRID = {"normalization": ("group", "none"), "learning_rate": (3e-3, 1e-2, 3e-2)}
#: Accountant that calibrates the noise: PLD is tighter than RDP (for epsilon 2 in the
#: default setting, noise multiplier 2.64 instead of 2.84) and is what the privacy ledger
#: measures for poisson_batches (truncated Poisson sampling, PLD only).
ACCOUNTANT = "pld"
#: Public prior for the output layer's bias (bpm): a typical heart rate in daily activities,
#: so the models do not spend their first steps climbing from 0 bpm. No subject data used.
PRIOR_HEART_RATE_BPM = 90.0


@dataclass(frozen=True)
class Recipe:
    """How one model is trained; `noise_multiplier=None` means non-private Adam."""

    name: str
    batch_size: int
    learning_rate: float
    epochs: int
    normalization: str  # "batch" (the walkthrough's), "group" (allowed under DP) or "none"
    noise_multiplier: float | None = None
    l2_norm_clip: float = 1.0
    averaging_decay: float | None = None  # None: no parameter averaging
    # "example": batch_size counts sequences; "user": it counts wearers (expected per batch),
    # each bringing up to examples_per_user sequences clipped as one unit.
    privacy_unit: str = "example"
    examples_per_user: int = 1


def non_private_recipe(epochs: int) -> Recipe:
    """The walkthrough's Adam recipe (what `--tune` chose: batch normalization, lr 3e-3)."""
    return Recipe(
        name="non-private Adam",
        batch_size=32,
        learning_rate=3e-3,
        epochs=epochs,
        normalization="batch",
    )


def private_recipe(
    n: int,
    target_epsilon: float,
    epochs: int,
    batch_size: int | None,
    learning_rate: float,
    l2_norm_clip: float,
    averaging_decay: float | None,
    normalization: str = "none",
) -> Recipe:
    """The DP-Adam recipe, noise calibrated to `target_epsilon` (batch from the planner if None).

    The planner's batch choice is the same under RDP and PLD here and RDP plans in seconds;
    the noise is then calibrated with `ACCOUNTANT`.
    """
    if batch_size is None:
        batch_size = plan_dp_training(n, target_epsilon, epochs, DELTA).batch_size
    noise_multiplier = pydp_r.compute_noise_multiplier(
        n, batch_size, target_epsilon, epochs, DELTA, accountant=ACCOUNTANT
    )
    return Recipe(
        name=f"DP-Adam eps={target_epsilon:g}",
        batch_size=batch_size,
        learning_rate=learning_rate,
        epochs=epochs,
        normalization=normalization,
        noise_multiplier=noise_multiplier,
        l2_norm_clip=l2_norm_clip,
        averaging_decay=averaging_decay,
    )


def poisson_steps_per_epoch(n: int, batch_size: int) -> int:
    """poisson_batches' default steps per epoch, floor(n / batch_size) (at least 1)."""
    return max(1, n // batch_size)


@dataclass(frozen=True)
class Recipes:
    """Everything the demo trains: both models, the sweep's DP recipes, how they were tuned."""

    non_private: Recipe
    private: Recipe
    sweep: dict[float, Recipe]  # target epsilon -> recipe; empty without `--sweep`
    tuning: dict[str, list[dict[str, Any]]]  # model -> scores of its candidates; empty untuned


def sweep_recipes(
    private: Recipe, n: int, target_epsilons: list[float], batch_size: int | None
) -> dict[float, Recipe]:
    """The private recipe recalibrated for each target epsilon (named "sweep DP-Adam eps=...")."""
    sweep = {}
    for epsilon in target_epsilons:
        recipe = private_recipe(
            n, epsilon, private.epochs, batch_size, private.learning_rate,
            private.l2_norm_clip, private.averaging_decay, private.normalization,
        )  # fmt: skip
        sweep[epsilon] = replace(recipe, name=f"sweep {recipe.name}")
    return sweep
