"""Training runs: one recipe on one seed, with a line of progress per group of epochs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import pydp_r
from pydp_r import audit
from pydp_r import data as wearable_data
from pydp_r.averaging import ParameterAveraging
from pydp_r.callbacks import PrivacyBudget
from pydp_r.demo.data import Arrays
from pydp_r.demo.recipes import (
    ACCOUNTANT,
    DELTA,
    PRIOR_HEART_RATE_BPM,
    Recipe,
    Recipes,
    poisson_steps_per_epoch,
)

#: Progress lines per run when not verbose: a line every quarter of the epochs.
PROGRESS_LINES_PER_RUN = 4


def say(line: str) -> None:
    """Print a line at once: progress piped to a log must not wait in a buffer."""
    print(line, flush=True)


@dataclass
class RunResult:
    """One training run on one seed; MAE in bpm, epsilon at `DELTA` (None if non-private)."""

    name: str
    seed: int
    test_mae_bpm: float
    validation_mae_bpm: float
    epsilon: float | None
    noise_multiplier: float | None
    batch_size: int
    epochs: int
    wall_seconds: float
    val_mae_per_epoch: list[float] = field(default_factory=list)
    epsilon_per_epoch: list[float] = field(default_factory=list)
    membership_auc: float | None = None
    membership_epsilon_lower_bound: float | None = None
    # DP runs: what the trained optimizer's privacy ledger recorded (see `privacy_record`).
    privacy: dict[str, Any] | None = None


def privacy_record(optimizer: keras.optimizers.Optimizer, delta: float) -> dict[str, Any]:
    """What ran, from the optimizer's privacy ledger: unit, n, rate, batch bound, noise, steps.

    Args:
        optimizer: A trained DP optimizer whose ledger holds one segment of noisy steps.
        delta: Delta of the reported epsilon, in (0, 1).

    Returns:
        privacy_unit ("example" or "user"), n_units, sampling_rate, max_units_per_batch,
        examples_per_unit, noise_multiplier, steps, delta, epsilon and the accountant that
        computed it ("pld": dp-accounting's PLD accountant, the one that accounts truncated
        Poisson batches).

    Raises:
        ValueError: If the ledger holds no steps or several segments (one run, one mechanism).
    """
    ledger = optimizer.privacy_ledger
    ran = [segment for segment in ledger.segments if segment.steps]
    if len(ran) != 1:
        raise ValueError(
            f"the privacy ledger must hold one segment of noisy steps; it holds {len(ran)}:\n"
            f"{ledger.describe()}"
        )
    (segment,) = ran
    return {
        "privacy_unit": segment.unit,
        "n_units": segment.n,
        "sampling_rate": segment.sampling_rate,
        "max_units_per_batch": segment.max_batch_size,
        "examples_per_unit": segment.examples_per_unit,
        "noise_multiplier": segment.noise_multiplier,
        "steps": segment.steps,
        "delta": delta,
        "epsilon": ledger.epsilon(delta, ACCOUNTANT),
        "accountant": ledger.accountant_for(ACCOUNTANT),
    }


def walkthrough_convnet(
    num_timesteps: int = 12,
    num_features: int = 6,
    output_bias_bpm: float = 0.0,
    batch_norm: bool = True,
) -> keras.Model:
    """The R walkthrough's 1-D convnet, with BatchNormalization after each convolution.

    Args:
        num_timesteps: 2-s windows per sequence, integer >= 11 (three valid convolutions).
        num_features: Features per window, integer >= 1.
        output_bias_bpm: Initial bias of the output unit, in bpm (a public prior).
        batch_norm: Whether to normalize after each convolution, as the walkthrough does.
    """
    layers: list[Any] = [keras.Input((num_timesteps, num_features))]
    for filters, kernel_size in ((32, 3), (64, 5), (128, 5)):
        layers.append(keras.layers.Conv1D(filters, kernel_size, activation="relu"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
    layers += [
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(output_bias_bpm)),
    ]
    return keras.Sequential(layers, name="heart_rate_convnet")


class EpochGroupProgress(keras.callbacks.Callback):
    """One line per group of `every` epochs (and the last), for logs and pipes.

    Keras' per-batch bar is noise there, and silence for minutes looks like a hang.
    """

    def __init__(
        self, label: str, epochs: int, every: int, write: Callable[[str], None] = say
    ) -> None:
        super().__init__()
        self.label, self.epochs, self.every, self.write = label, epochs, every, write
        self._group_start = 1
        self._clock = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        done = epoch + 1
        if done % self.every and done != self.epochs:
            return
        logs = logs or {}
        span = f"{done}" if self._group_start == done else f"{self._group_start}-{done}"
        parts = [
            f"  [{self.label}] epoch {span}/{self.epochs}",
            f"val MAE {logs.get('val_mae', math.nan):6.2f} bpm",
        ]
        if "epsilon" in logs:
            parts.append(f"epsilon {logs['epsilon']:5.2f}")
        parts.append(f"{time.perf_counter() - self._clock:5.0f} s")
        self.write("  ".join(parts))
        self._group_start = done + 1


def progress_every(epochs: int, verbose: bool) -> int:
    """Epochs per progress line: 1 when verbose, else a quarter of the run (at least 1)."""
    return 1 if verbose else max(1, math.ceil(epochs / PROGRESS_LINES_PER_RUN))


def _training_data(
    recipe: Recipe, x_fit: np.ndarray, y_fit: np.ndarray, seed: int
) -> tuple[Any, int]:
    """The batches a run trains on and their number per epoch."""
    n = len(y_fit)
    if recipe.noise_multiplier is not None:
        # Poisson sampling: every step includes each sequence with probability batch / n,
        # what the accountant's amplified epsilon assumes. One epoch = floor(n / batch) steps,
        # never more than the planned noise was calibrated for.
        batches = wearable_data.poisson_batches((x_fit, y_fit), recipe.batch_size / n, seed=seed)
        return batches, poisson_steps_per_epoch(n, recipe.batch_size)
    batches = (
        tf.data.Dataset.from_tensor_slices((x_fit, y_fit))
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.batch_size)
    )
    return batches, -(-n // recipe.batch_size)


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int) -> keras.Model:
    """The convnet with the recipe's normalization, optimizer and cosine learning rate."""
    if recipe.normalization == "group":
        # BatchNormalization mixes examples within a batch, which breaks the per-example bound.
        model = pydp_r.replace_batch_norm(model)
    # Decayed along a cosine to 1% of the initial rate: with noisy gradients a constant rate
    # keeps the weights wandering, so the last epoch's model is a lottery.
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate, decay_steps=recipe.epochs * steps_per_epoch, alpha=0.01
    )
    if recipe.noise_multiplier is not None:
        optimizer: keras.optimizers.Optimizer = pydp_r.DPAdam(
            l2_norm_clip=recipe.l2_norm_clip,
            noise_multiplier=recipe.noise_multiplier,
            learning_rate=schedule,
        )
    else:
        optimizer = keras.optimizers.Adam(schedule)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


def train(
    recipe: Recipe,
    arrays: Arrays,
    seed: int,
    verbose: bool = False,
    attack: bool = True,
) -> RunResult:
    """Train one model on one seed's (x_fit, y_fit, x_val, y_val, x_test, y_test).

    Validation runs every epoch on the validation split (with the averaged weights when the
    recipe averages); the test MAE is measured once, after training, on the final model.
    With `attack` the model is also attacked by loss-threshold membership inference, training
    sequences against the held-out non-members (random blocks of the training span, see
    `data.split_non_members`). Prints a line per group of epochs (each epoch if
    `verbose`).
    """
    x_fit, y_fit, x_val, y_val, x_test, y_test, x_non_member, y_non_member = arrays
    keras.utils.set_random_seed(seed)
    # The weights are drawn before the batches are set up, so a seed keeps its initial model.
    model = walkthrough_convnet(
        output_bias_bpm=PRIOR_HEART_RATE_BPM, batch_norm=recipe.normalization != "none"
    )
    train_data, steps_per_epoch = _training_data(recipe, x_fit, y_fit, seed)
    callbacks: list[keras.callbacks.Callback] = []
    if recipe.noise_multiplier is not None:
        callbacks.append(PrivacyBudget(delta=DELTA))
    model = compile_model(model, recipe, steps_per_epoch)
    if recipe.averaging_decay is not None:
        callbacks.append(ParameterAveraging(decay=recipe.averaging_decay))
    label = f"{recipe.name}, seed {seed}"
    callbacks.append(
        EpochGroupProgress(label, recipe.epochs, progress_every(recipe.epochs, verbose))
    )
    start = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=(x_val, y_val),
        epochs=recipe.epochs,
        callbacks=callbacks,
        shuffle=False,  # both datasets draw their own order
        verbose=0,
    )
    wall_seconds = time.perf_counter() - start
    val_mae = float(model.evaluate(x_val, y_val, verbose=0, return_dict=True)["mae"])
    test_mae = float(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["mae"])
    membership = None
    if attack:
        membership = audit.membership_inference(
            model, members=(x_fit, y_fit), non_members=(x_non_member, y_non_member), delta=DELTA
        )
    epsilon_per_epoch = [float(e) for e in history.history.get("epsilon", [])]
    privacy = None
    if recipe.noise_multiplier is not None:
        privacy = privacy_record(model.optimizer, DELTA)
    return RunResult(
        name=recipe.name,
        seed=seed,
        test_mae_bpm=test_mae,
        validation_mae_bpm=val_mae,
        epsilon=epsilon_per_epoch[-1] if epsilon_per_epoch else None,
        noise_multiplier=None if privacy is None else privacy["noise_multiplier"],
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        wall_seconds=wall_seconds,
        val_mae_per_epoch=[float(v) for v in history.history["val_mae"]],
        epsilon_per_epoch=epsilon_per_epoch,
        membership_auc=membership.auc if membership else None,
        membership_epsilon_lower_bound=membership.epsilon_lower_bound if membership else None,
        privacy=privacy,
    )


def run_seeds(
    recipe: Recipe,
    arrays_by_seed: dict[int, Arrays],
    verbose: bool = False,
    attack: bool = True,
    write: Callable[[str], None] = say,
) -> list[RunResult]:
    """`train` on every seed, with a line when each run starts and when it ends."""
    results = []
    for seed, arrays in arrays_by_seed.items():
        write(f"{recipe.name}, seed {seed}: training {recipe.epochs} epochs ...")
        result = train(recipe, arrays, seed, verbose, attack)
        auc = "" if result.membership_auc is None else f", MIA AUC {result.membership_auc:.3f}"
        epsilon = "" if result.epsilon is None else f", epsilon {result.epsilon:.2f}"
        write(
            f"{recipe.name}, seed {seed}: test MAE {result.test_mae_bpm:.2f} bpm{epsilon}"
            f"{auc} ({result.wall_seconds:.0f} s)"
        )
        results.append(result)
    return results


@dataclass(frozen=True)
class Runs:
    """Every run of the demo, per model name (both models) and per sweep epsilon."""

    by_model: dict[str, list[RunResult]]
    sweep: dict[float, list[RunResult]]


def run_recipes(
    recipes: Recipes,
    arrays_by_seed: dict[int, Arrays],
    verbose: bool = False,
    attack: bool = True,
) -> Runs:
    """Both models on every seed, then each sweep recipe on every seed."""
    by_model = {
        recipe.name: run_seeds(recipe, arrays_by_seed, verbose, attack)
        for recipe in (recipes.non_private, recipes.private)
    }
    sweep = {
        epsilon: run_seeds(recipe, arrays_by_seed, verbose, attack)
        for epsilon, recipe in recipes.sweep.items()
    }
    return Runs(by_model, sweep)
