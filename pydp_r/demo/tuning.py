"""Choosing the recipes: as given, or tuned on public data (lowest mean validation MAE)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydp_r.demo.data import Arrays
from pydp_r.demo.recipes import (
    NON_PRIVATE_GRID,
    PRIVATE_GRID,
    Recipe,
    Recipes,
    non_private_recipe,
    private_recipe,
    sweep_recipes,
)
from pydp_r.demo.runs import say, train


def tune(
    base: Recipe,
    grid: dict[str, tuple[Any, ...]],
    arrays_by_seed: dict[int, Any],
    verbose: bool = False,
    train_run: Callable[..., Any] | None = None,
    prepared: Callable[[Recipe], Recipe] | None = None,
) -> tuple[Recipe, list[dict[str, Any]]]:
    """The candidate of `grid` with the lowest mean validation MAE over `arrays_by_seed`.

    Args:
        base: Recipe whose fields `grid` varies.
        grid: Recipe field name -> candidate values; every combination is trained.
        arrays_by_seed: Seed -> the public data `train_run` takes (for `train`: x_fit, y_fit,
            x_val, y_val, x_test, y_test of public subjects); only the validation split is
            scored, the test part is never read.
        verbose: One line per epoch.
        train_run: `train(recipe, arrays, seed, verbose, attack=False)`-like; default `train`.
        prepared: Applied to each candidate before training (e.g. recalibrating its noise).

    Returns:
        The chosen recipe and, per candidate, its fields and mean validation MAE (bpm).
    """
    candidates, scores = [], []
    for values in itertools.product(*grid.values()):
        fields = dict(zip(grid, values, strict=True))
        candidate = replace(base, **fields)
        candidates.append(candidate if prepared is None else prepared(candidate))
        runs = [
            (train_run or train)(candidates[-1], arrays, seed, verbose, attack=False)
            for seed, arrays in arrays_by_seed.items()
        ]
        validation_mae = statistics.fmean(run.validation_mae_bpm for run in runs)
        scores.append({**fields, "validation_mae_bpm": validation_mae})
        say(f"  tune {base.name}: {scores[-1]}")
    best = min(range(len(scores)), key=lambda index: scores[index]["validation_mae_bpm"])
    return candidates[best], scores


def choose_recipes(
    n: int,
    *,
    epochs: int,
    target_epsilon: float,
    batch_size: int | None,
    learning_rate: float,
    l2_norm_clip: float,
    averaging_decay: float | None,
    dp_normalization: str,
    tune_on: dict[int, Arrays] | None = None,
    sweep_epsilons: list[float] | None = None,
    verbose: bool = False,
) -> Recipes:
    """Both recipes for `n` training sequences, tuned first if `tune_on` holds public arrays.

    Args:
        n: Training sequences per seed (the privacy accounting's n).
        epochs, target_epsilon, batch_size, learning_rate, l2_norm_clip, averaging_decay,
            dp_normalization: The private recipe (see `private_recipe`); `epochs` both.
        tune_on: Seed -> arrays of public subjects to tune both recipes on (`tune`), or None.
        sweep_epsilons: Target epsilons of a privacy-utility sweep, or None for none.
        verbose: One line per epoch while tuning.
    """
    non_private = non_private_recipe(epochs)
    private = private_recipe(
        n, target_epsilon, epochs, batch_size, learning_rate, l2_norm_clip, averaging_decay,
        dp_normalization,
    )  # fmt: skip
    tuning: dict[str, list[dict[str, Any]]] = {}
    if tune_on is not None:
        say(f"Tuning on the validation split of public synthetic subjects {tuple(tune_on)}:")
        non_private, tuning[non_private.name] = tune(
            non_private, NON_PRIVATE_GRID, tune_on, verbose
        )
        private, tuning[private.name] = tune(private, PRIVATE_GRID, tune_on, verbose)
    sweep = sweep_recipes(private, n, sweep_epsilons, batch_size) if sweep_epsilons else {}
    return Recipes(non_private, private, sweep, tuning)
