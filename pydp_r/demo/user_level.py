"""Private per person: user-level DP-SGD on a synthetic population, tested on held-out wearers.

`python -m pydp_r.demo --privacy-unit user`. Example-level DP (the default demo) bounds what one
24-s sequence can do; a wearer contributes hundreds of overlapping sequences, and for a person
it gives no useful bound. Here the unit is the wearer: every step samples each training wearer
with probability q (`poisson_batches(..., user_ids=)`), each sampled wearer brings up to k of
their sequences as one block that DP-Adam clips as one unit, and the privacy ledger accounts
wearers. The noise multiplier is calibrated (PLD) so that the ledger's own accounting of the
run, truncation of oversized batches included, meets the target epsilon at
delta = min(1e-5, 1 / wearers).

The test wearers are held out of training: the test MAE is the error on people the model never
saw, and the membership inference compares training wearers with held-out wearers (i.i.d.
non-members), one score per wearer (the mean loss over their sequences).
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import pydp_r
from pydp_r import audit
from pydp_r import data as wearable_data
from pydp_r.averaging import ParameterAveraging
from pydp_r.callbacks import PrivacyBudget
from pydp_r.data.sampling import poisson_batch_size_bound
from pydp_r.demo.data import public_feature_scaling
from pydp_r.demo.population import (
    N_LABELS_RANGE,
    TEST_USERS,
    TRAINING_USERS,
    VALIDATION_USERS,
    PopulationArrays,
    population_arrays,
)
from pydp_r.demo.recipes import ACCOUNTANT, DEFAULT_SEEDS, PRIOR_HEART_RATE_BPM, Recipe
from pydp_r.demo.report import mean_and_sd
from pydp_r.demo.runs import (
    EpochGroupProgress,
    RunResult,
    compile_model,
    privacy_record,
    progress_every,
    say,
    walkthrough_convnet,
)
from pydp_r.demo.tuning import tune
from pydp_r.ledger import POISSON, USER, PrivacyLedger, Segment

#: Evaluation populations: the command line's default --seeds (disjoint from the tuning ones).
USER_SEEDS = DEFAULT_SEEDS
#: Public synthetic populations the user-level recipes are tuned on (`--tune`).
USER_TUNING_SEEDS = (100, 101, 102)
# What `--tune` searches at the user level: the same number of candidates for both models.
# Measured (mean validation MAE over populations 100-102, 2000 training wearers, bpm):
# non-private batch normalization 1/2/4 epochs 8.08/8.06/8.13, none 8.11/8.11/8.13;
# DP lr 3e-3 with k = 4/16/32 8.79/8.70/8.67, lr 1e-2 8.46/8.41/8.42. Tuning leaves fixed
# the non-private batch (256 sequences) and learning rate (3e-3), and the private sampling
# rate (q = 0.1: 200 wearers of 2000 per step on average) and 10 epochs (100 steps).
NON_PRIVATE_USER_GRID = {"normalization": ("batch", "none"), "epochs": (1, 2, 4)}
PRIVATE_USER_GRID = {"learning_rate": (3e-3, 1e-2), "examples_per_user": (4, 16, 32)}
#: Delta is at most 1e-5 and at most 1 / wearers.
MAX_DELTA = 1e-5
#: Held-out wearers attacked and as many training wearers, each scored by its mean loss.
ATTACK_USERS = TEST_USERS


def user_delta(n_users: int) -> float:
    """Delta of the user-level guarantee: min(1e-5, 1 / n_users)."""
    return min(MAX_DELTA, 1.0 / n_users)


def steps_per_epoch(sampling_rate: float) -> int:
    """poisson_batches' default steps per epoch: floor(1 / sampling_rate), at least 1."""
    return max(1, math.floor(1 / sampling_rate + 1e-9))


def user_segment(recipe: Recipe, n_users: int, noise_multiplier: float) -> Segment:
    """The ledger segment a user-level run of `recipe` on `n_users` wearers records."""
    rate = recipe.batch_size / n_users
    return Segment(
        sampling=POISSON,
        noise_multiplier=noise_multiplier,
        used_microbatching=False,
        steps=recipe.epochs * steps_per_epoch(rate),
        n=n_users,
        sampling_rate=rate,
        max_batch_size=poisson_batch_size_bound(n_users, rate),
        unit=USER,
        examples_per_unit=recipe.examples_per_user,
    )


def calibrate_user_noise(recipe: Recipe, n_users: int, target_epsilon: float) -> float:
    """Smallest noise multiplier (to 0.1%) whose ledger epsilon is at most `target_epsilon`.

    Starts from `compute_noise_multiplier` (PLD, Poisson sampling) and raises it by 0.1% until
    the ledger's own accounting of the run (its exact steps and the truncated batches of
    `poisson_batches`) is within the target, so the epsilon the run reports is never above it.
    """
    delta = user_delta(n_users)
    noise = pydp_r.compute_noise_multiplier(
        n_users, recipe.batch_size, target_epsilon, recipe.epochs, delta, accountant=ACCOUNTANT
    )
    while (
        PrivacyLedger([user_segment(recipe, n_users, noise)]).epsilon(delta, ACCOUNTANT)
        > target_epsilon
    ):
        noise *= 1.001
    return noise


@dataclass(frozen=True)
class UserRecipes:
    """Both user-level recipes and the scores of the tuning candidates (empty untuned)."""

    non_private: Recipe
    private: Recipe
    tuning: dict[str, list[dict[str, Any]]]


def non_private_user_recipe() -> Recipe:
    """Adam on shuffled sequences of all training wearers (what `--tune` chose)."""
    return Recipe(
        name="non-private Adam",
        batch_size=256,
        learning_rate=3e-3,
        epochs=2,
        normalization="batch",
    )


def private_user_recipe(
    n_users: int,
    target_epsilon: float,
    users_per_batch: int | None = None,
    examples_per_user: int = 16,
    learning_rate: float = 1e-2,
    epochs: int = 10,
) -> Recipe:
    """DP-Adam over Poisson batches of wearers, noise calibrated for the ledger's epsilon.

    Args:
        n_users: Training wearers, integer >= 2.
        target_epsilon: Epsilon per wearer, > 0, at delta `user_delta(n_users)`.
        users_per_batch: Expected wearers per step; None: a tenth of them (q = 0.1).
        examples_per_user: k, the most sequences a wearer brings to a step (what `--tune`
            chose, with the learning rate).
        learning_rate: DP-Adam's initial rate, decayed along a cosine.
        epochs: Passes, each of floor(1 / q) steps.
    """
    if users_per_batch is None:
        users_per_batch = max(1, n_users // 10)
    recipe = Recipe(
        name=f"DP-Adam per wearer eps={target_epsilon:g}",
        batch_size=users_per_batch,
        learning_rate=learning_rate,
        epochs=epochs,
        normalization="none",
        l2_norm_clip=1.0,
        averaging_decay=0.99,
        privacy_unit=USER,
        examples_per_user=examples_per_user,
    )
    return replace(recipe, noise_multiplier=calibrate_user_noise(recipe, n_users, target_epsilon))


def _training_data(recipe: Recipe, arrays: PopulationArrays, seed: int) -> tuple[Any, int]:
    n_users = arrays.n_users
    if recipe.noise_multiplier is not None:
        rate = recipe.batch_size / n_users
        batches = wearable_data.poisson_batches(
            (arrays.x_fit, arrays.y_fit),
            rate,
            user_ids=arrays.user_ids_fit,
            max_examples_per_user=recipe.examples_per_user,
            seed=seed,
        )
        return batches, steps_per_epoch(rate)
    n = len(arrays.y_fit)
    batches = (
        tf.data.Dataset.from_tensor_slices((arrays.x_fit, arrays.y_fit))
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.batch_size)
    )
    return batches, -(-n // recipe.batch_size)


def wearer_scores(model: keras.Model, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One membership score per wearer: minus the mean squared error over their sequences."""
    losses = audit.per_example_losses(model, x, y, keras.losses.MeanSquaredError())
    _, index = np.unique(ids, return_inverse=True)
    return -np.bincount(index, weights=losses) / np.bincount(index)


def user_membership_inference(
    model: keras.Model, arrays: PopulationArrays, delta: float, seed: int
) -> tuple[float, float]:
    """(AUC, epsilon lower bound) of a loss attack on wearers: training ones against held-out.

    Members are `ATTACK_USERS` training wearers drawn at random (or all, if fewer), non-members
    the held-out test wearers: both drawn from one population, so only membership separates
    them. Each wearer is one trial, scored by minus their mean loss.
    """
    rng = np.random.default_rng(seed)
    training_ids = np.unique(arrays.user_ids_fit)
    chosen = rng.choice(training_ids, min(ATTACK_USERS, len(training_ids)), replace=False)
    mask = np.isin(arrays.user_ids_fit, chosen)
    members = wearer_scores(
        model, arrays.x_fit[mask], arrays.y_fit[mask], arrays.user_ids_fit[mask]
    )
    non_members = wearer_scores(model, arrays.x_test, arrays.y_test, arrays.user_ids_test)
    members, non_members = rng.permutation(members), rng.permutation(non_members)
    bound = audit.epsilon_lower_bound(non_members, members, delta, method="dp", direction=1)
    return audit.roc_auc(non_members, members), bound.epsilon_lower_bound


def train_users(
    recipe: Recipe,
    arrays: PopulationArrays,
    seed: int,
    verbose: bool = False,
    attack: bool = True,
) -> RunResult:
    """Train one model on one population; test on its held-out wearers.

    The privacy fields of the result (`RunResult.privacy`) are read from the trained
    optimizer's privacy ledger: what ran, not what the recipe declared.
    """
    keras.utils.set_random_seed(seed)
    model = walkthrough_convnet(
        output_bias_bpm=PRIOR_HEART_RATE_BPM, batch_norm=recipe.normalization != "none"
    )
    train_data, epoch_steps = _training_data(recipe, arrays, seed)
    delta = user_delta(arrays.n_users)
    callbacks: list[keras.callbacks.Callback] = []
    if recipe.noise_multiplier is not None:
        callbacks.append(PrivacyBudget(delta=delta, accountant=ACCOUNTANT))
    model = compile_model(model, recipe, epoch_steps)
    if recipe.averaging_decay is not None:
        callbacks.append(ParameterAveraging(decay=recipe.averaging_decay))
    label = f"{recipe.name}, seed {seed}"
    callbacks.append(
        EpochGroupProgress(label, recipe.epochs, progress_every(recipe.epochs, verbose))
    )
    start = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=(arrays.x_val, arrays.y_val),
        epochs=recipe.epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    wall_seconds = time.perf_counter() - start
    val_mae = float(model.evaluate(arrays.x_val, arrays.y_val, verbose=0, return_dict=True)["mae"])
    test_mae = float(
        model.evaluate(arrays.x_test, arrays.y_test, verbose=0, return_dict=True)["mae"]
    )
    auc = bound = None
    if attack:
        auc, bound = user_membership_inference(model, arrays, delta, seed)
    privacy = None
    if recipe.noise_multiplier is not None:
        privacy = privacy_record(model.optimizer, delta)
    epsilon_per_epoch = [float(e) for e in history.history.get("epsilon", [])]
    return RunResult(
        name=recipe.name,
        seed=seed,
        test_mae_bpm=test_mae,
        validation_mae_bpm=val_mae,
        epsilon=None if privacy is None else privacy["epsilon"],
        noise_multiplier=None if privacy is None else privacy["noise_multiplier"],
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        wall_seconds=wall_seconds,
        val_mae_per_epoch=[float(v) for v in history.history["val_mae"]],
        epsilon_per_epoch=epsilon_per_epoch,
        membership_auc=auc,
        membership_epsilon_lower_bound=bound,
        privacy=privacy,
    )


def tune_users(
    base: Recipe,
    grid: dict[str, tuple[Any, ...]],
    arrays_by_seed: dict[int, PopulationArrays],
    target_epsilon: float | None,
    verbose: bool = False,
) -> tuple[Recipe, list[dict[str, Any]]]:
    """The candidate of `grid` with the lowest mean validation MAE over public populations.

    A private candidate's noise is recalibrated for `target_epsilon` (its k, epochs or batch
    change the accounting); only validation wearers are scored, never the test wearers.
    """
    n_users = next(iter(arrays_by_seed.values())).n_users

    def recalibrated(candidate: Recipe) -> Recipe:
        noise = calibrate_user_noise(candidate, n_users, target_epsilon)
        return replace(candidate, noise_multiplier=noise)

    private = base.noise_multiplier is not None
    return tune(
        base,
        grid,
        arrays_by_seed,
        verbose,
        train_run=train_users,
        prepared=recalibrated if private else None,
    )


def choose_user_recipes(
    n_users: int,
    target_epsilon: float,
    tune_on: dict[int, PopulationArrays] | None = None,
    verbose: bool = False,
) -> UserRecipes:
    """Both user-level recipes for `n_users` training wearers, tuned first if `tune_on`."""
    non_private = non_private_user_recipe()
    private = private_user_recipe(n_users, target_epsilon)
    tuning: dict[str, list[dict[str, Any]]] = {}
    if tune_on is not None:
        say(f"Tuning on the validation wearers of public populations {tuple(tune_on)}:")
        non_private, tuning[non_private.name] = tune_users(
            non_private, NON_PRIVATE_USER_GRID, tune_on, None, verbose
        )
        private, tuning[private.name] = tune_users(
            private, PRIVATE_USER_GRID, tune_on, target_epsilon, verbose
        )
    return UserRecipes(non_private, private, tuning)


def run_user_demo(
    seeds: list[int],
    output: Path,
    target_epsilon: float = 2.0,
    training_users: int = TRAINING_USERS,
    tune: bool = False,
    verbose: bool = False,
    attack: bool = True,
    held_out_users: tuple[int, int] = (VALIDATION_USERS, TEST_USERS),
    recipes: UserRecipes | None = None,
) -> dict[str, Any]:
    """The per-wearer demo: recipes, runs on every population seed, the report and results.json.

    Args:
        seeds: Population seeds to evaluate on (each also the training seed).
        output: Folder for results.json.
        target_epsilon: Epsilon per wearer, > 0.
        training_users: Training wearers per population, integer >= 2.
        tune: Whether to tune both recipes on public populations `USER_TUNING_SEEDS` first.
        verbose: A progress line every epoch.
        attack: Whether to run the wearer-level membership inference.
        held_out_users: (validation, test) wearers per population.
        recipes: The recipes to run instead of choosing them (for tests); None chooses.
    """
    output.mkdir(parents=True, exist_ok=True)
    scaling = public_feature_scaling()

    def population(seed: int) -> PopulationArrays:
        return population_arrays(seed, scaling, training_users, *held_out_users)

    if recipes is None:
        tune_on = {seed: population(seed) for seed in USER_TUNING_SEEDS} if tune else None
        recipes = choose_user_recipes(training_users, target_epsilon, tune_on, verbose)
        del tune_on
    private = recipes.private
    say(
        f"Per-wearer DP recipe: {private.batch_size} wearers per batch expected (Poisson, "
        f"q = {private.batch_size / training_users:.4g}), up to {private.examples_per_user} "
        f"sequences each, noise multiplier {private.noise_multiplier:.3f}, {private.epochs} "
        f"epochs, lr {private.learning_rate:g} (cosine), delta {user_delta(training_users):g}."
    )
    runs: dict[str, list[RunResult]] = {recipes.non_private.name: [], private.name: []}
    sources, baselines = [], []
    for seed in seeds:
        arrays = population(seed)
        sources.append(arrays.source)
        baselines.append(arrays.baseline_mae_bpm)
        say(f"{arrays.source}: {len(arrays.y_fit)} training sequences.")
        for recipe in (recipes.non_private, private):
            say(f"{recipe.name}, seed {seed}: training {recipe.epochs} epochs ...")
            result = train_users(recipe, arrays, seed, verbose, attack)
            epsilon = "" if result.epsilon is None else f", epsilon {result.epsilon:.3f}"
            auc = "" if result.membership_auc is None else f", MIA AUC {result.membership_auc:.3f}"
            say(
                f"{recipe.name}, seed {seed}: held-out MAE {result.test_mae_bpm:.2f} bpm"
                f"{epsilon}{auc} ({result.wall_seconds:.0f} s)"
            )
            runs[recipe.name].append(result)
        del arrays
    return user_report(
        recipes, runs, seeds, sources, baselines, training_users, held_out_users, output
    )


def user_report(
    recipes: UserRecipes,
    runs: dict[str, list[RunResult]],
    seeds: list[int],
    sources: list[str],
    baselines: list[float],
    training_users: int,
    held_out_users: tuple[int, int],
    output: Path,
) -> dict[str, Any]:
    """Prints the table and notes; writes results.json; returns its content."""
    summary = {}
    for name, model_runs in runs.items():
        test_mean, test_sd = mean_and_sd([run.test_mae_bpm for run in model_runs])
        aucs = [run.membership_auc for run in model_runs if run.membership_auc is not None]
        epsilons = [run.epsilon for run in model_runs if run.epsilon is not None]
        summary[name] = {
            "test_mae_bpm_mean": test_mean,
            "test_mae_bpm_sd": test_sd,
            "membership_auc_mean": statistics.fmean(aucs) if aucs else None,
            "epsilon": max(epsilons) if epsilons else None,
        }
    baseline_mean, baseline_sd = mean_and_sd(baselines)
    private, non_private = recipes.private.name, recipes.non_private.name
    ratio = summary[private]["test_mae_bpm_mean"] / summary[non_private]["test_mae_bpm_mean"]
    say("")
    say(f"{'model':<34} {'held-out MAE (bpm)':>19} {'epsilon/wearer':>15} {'MIA AUC':>8}")
    say(f"{'predict training mean':<34} {baseline_mean:>12.2f} ± {baseline_sd:<4.2f}")
    for name, row in summary.items():
        epsilon = "-" if row["epsilon"] is None else f"{row['epsilon']:.3f}"
        auc = "-" if row["membership_auc_mean"] is None else f"{row['membership_auc_mean']:.3f}"
        say(
            f"{name:<34} {row['test_mae_bpm_mean']:>12.2f} ± {row['test_mae_bpm_sd']:<4.2f} "
            f"{epsilon:>15} {auc:>8}"
        )
    delta = user_delta(training_users)
    say(f"\nDP / non-private held-out MAE: {ratio:.2f}x (means over {len(seeds)} populations).")
    note = (
        f"Privacy unit: one wearer (all of their sequences). Epsilon at delta = {delta:g} is "
        f"the optimizer's privacy ledger for what ran: {training_users} training wearers, each "
        "in a step with probability q, up to k sequences of a wearer clipped as one unit. "
        "Test wearers and the attack's non-members were never trained on; the attack scores "
        "each wearer by their mean loss (AUC 0.5 is chance). Recipes tuned on public "
        f"populations {USER_TUNING_SEEDS}, not on the evaluation seeds."
    )
    say(textwrap.fill(note, width=88))
    results = {
        "privacy_unit": USER,
        "data": sources,
        "seeds": seeds,
        "n_labels_range": list(N_LABELS_RANGE),
        "training_users": training_users,
        "validation_users": held_out_users[0],
        "test_users": held_out_users[1],
        "delta": delta,
        "baseline_mae_bpm": baselines,
        "recipes": {r.name: asdict(r) for r in (recipes.non_private, recipes.private)},
        "tuning_seeds": list(USER_TUNING_SEEDS),
        "tuning_grids": {
            name: {key: list(values) for key, values in grid.items()}
            for name, grid in (
                (recipes.non_private.name, NON_PRIVATE_USER_GRID),
                (recipes.private.name, PRIVATE_USER_GRID),
            )
        },
        "tuning": recipes.tuning,
        "summary": summary,
        "dp_to_non_private_mae_ratio": ratio,
        "runs": [asdict(run) for model_runs in runs.values() for run in model_runs],
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    say(f"Wrote {output}/results.json")
    return results
