"""Heart-rate estimation from wrist PPG, trained without and with differential privacy.

`python -m pydp_r.demo` (what `make demo` runs) follows the R walkthrough "Differential Privacy
with TensorFlow": PPG-DaLiA subject S1's wrist signals averaged to 2 s steps, sequences of 12
steps, a 1-D convnet, trained once with Adam and once with DP-Adam (clip 1.0, noise
multiplier 1.1, learning rate 0.01, here decayed along a cosine). It runs on the bundled
synthetic subject unless `--data-dir` (or `PPG_DALIA_DIR`) points at a folder holding the real
`S1.pkl`.

Prints MAE (bpm) on the test part for both models, the MAE of always predicting the training
mean, epsilon at delta = 1e-5 for the private run, epochs and wall time; writes
`demo-output/` with a plot of both training histories and the numbers as JSON. `--sweep`
adds a privacy-utility curve over several noise multipliers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import pydp_r
from pydp_r import audit
from pydp_r import data as wearable_data
from pydp_r.callbacks import PrivacyBudget

DELTA = 1e-5


@dataclass
class RunResult:
    """One training run: test MAE (bpm), epsilon (None if non-private), history per epoch."""

    name: str
    test_mae_bpm: float
    epsilon: float | None
    noise_multiplier: float | None
    epochs: int
    wall_seconds: float
    val_mae_per_epoch: list[float] = field(default_factory=list)
    epsilon_per_epoch: list[float] = field(default_factory=list)
    membership_auc: float | None = None
    membership_epsilon_lower_bound: float | None = None


def walkthrough_convnet(num_timesteps: int = 12, num_features: int = 6) -> keras.Model:
    """The R walkthrough's 1-D convnet, with BatchNormalization as it had it."""
    layers: list[Any] = [keras.Input((num_timesteps, num_features))]
    for filters, kernel_size in ((32, 3), (64, 5), (128, 5)):
        layers.append(keras.layers.Conv1D(filters, kernel_size, activation="relu"))
        layers.append(keras.layers.BatchNormalization())
    layers += [
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(1),
    ]
    return keras.Sequential(layers, name="heart_rate_convnet")


class EpochLine(keras.callbacks.Callback):
    """One line per epoch (for logs and pipes, where Keras' progress bar is noise)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [
            f"[{self.name}] epoch {epoch + 1:>3}",
            f"val MAE {logs.get('val_mae', float('nan')):6.2f} bpm",
        ]
        if "epsilon" in logs:
            parts.append(f"epsilon {logs['epsilon']:6.2f}")
        print("  ".join(parts), flush=True)


def train(
    name: str,
    datasets: tuple[Any, Any],
    n_train: int,
    batch_size: int,
    epochs: int,
    learning_rate: float,
    noise_multiplier: float | None,
    l2_norm_clip: float = 1.0,
    seed: int = 0,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> RunResult:
    """Train one model; `noise_multiplier=None` means non-private Adam.

    With `arrays` (x_train, y_train, x_test, y_test) the trained model is also attacked by
    loss-threshold membership inference, training sequences against test sequences.
    """
    ds_train, ds_test = datasets
    keras.utils.set_random_seed(seed)
    model = walkthrough_convnet()
    callbacks: list[keras.callbacks.Callback] = []
    if noise_multiplier is None:
        optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(learning_rate)
    else:
        # BatchNormalization mixes examples within a batch, which breaks the per-example bound.
        model = pydp_r.replace_batch_norm(model)
        # The walkthrough's 0.01, decayed along a cosine to 1% of it: with noisy gradients a
        # constant rate keeps the weights wandering, so the last epoch's model is a lottery.
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=epochs * (n_train // batch_size), alpha=0.01
        )
        optimizer = pydp_r.DPAdam(
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            learning_rate=schedule,
        )
        callbacks.append(PrivacyBudget(n=n_train, batch_size=batch_size, delta=DELTA))
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    interactive = sys.stdout.isatty()
    if not interactive:
        callbacks.append(EpochLine(name))
    start = time.perf_counter()
    history = model.fit(
        ds_train,
        validation_data=ds_test,
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset is shuffled already
        verbose=1 if interactive else 0,
    )
    wall_seconds = time.perf_counter() - start
    test_mae = float(model.evaluate(ds_test, verbose=0, return_dict=True)["mae"])
    attack = None
    if arrays is not None:
        x_train, y_train, x_test, y_test = arrays
        attack = audit.membership_inference(
            model, members=(x_train, y_train), non_members=(x_test, y_test), delta=DELTA
        )
    epsilon_per_epoch = [float(e) for e in history.history.get("epsilon", [])]
    return RunResult(
        name=name,
        test_mae_bpm=test_mae,
        epsilon=epsilon_per_epoch[-1] if epsilon_per_epoch else None,
        noise_multiplier=noise_multiplier,
        epochs=epochs,
        wall_seconds=wall_seconds,
        val_mae_per_epoch=[float(v) for v in history.history["val_mae"]],
        epsilon_per_epoch=epsilon_per_epoch,
        membership_auc=attack.auc if attack else None,
        membership_epsilon_lower_bound=attack.epsilon_lower_bound if attack else None,
    )


def load_subject(data_dir: str | None, subject: str, seed: int) -> tuple[dict[str, Any], str]:
    """The real subject from `data_dir` if given (or `PPG_DALIA_DIR`), else the synthetic one."""
    data_dir = data_dir or os.environ.get("PPG_DALIA_DIR")
    if data_dir:
        path = Path(data_dir) / f"{subject}.pkl"
        return wearable_data.load_ppg_dalia_subject(path), f"PPG-DaLiA {subject} ({path})"
    return wearable_data.synthetic_ppg_subject(seed=seed), f"synthetic subject (seed {seed})"


def training_mean_baseline(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """MAE (bpm) on the test part of always predicting the mean training heart rate."""
    return float(np.mean(np.abs(y_test - np.mean(y_train))))


def plot_histories(runs: list[RunResult], baseline_mae: float, path: Path) -> None:
    """Validation MAE per epoch for each run, epsilon of the private run on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, mae_axis = plt.subplots(figsize=(7, 4))
    for run in runs:
        epochs = range(1, len(run.val_mae_per_epoch) + 1)
        mae_axis.plot(epochs, run.val_mae_per_epoch, marker="o", markersize=3, label=run.name)
    mae_axis.axhline(baseline_mae, color="black", linestyle=":", label="predict training mean")
    mae_axis.set_xlabel("epoch")
    mae_axis.set_ylabel("validation MAE (bpm)")
    mae_axis.set_ylim(bottom=0)
    handles, labels = mae_axis.get_legend_handles_labels()
    private = [run for run in runs if run.epsilon_per_epoch]
    if private:
        epsilon_axis = mae_axis.twinx()
        epsilon_axis.plot(
            range(1, len(private[0].epsilon_per_epoch) + 1),
            private[0].epsilon_per_epoch,
            color="grey",
            linestyle="--",
            label=f"epsilon of {private[0].name} (delta={DELTA:g})",
        )
        epsilon_axis.set_ylabel("epsilon")
        epsilon_axis.set_ylim(bottom=0)
        more_handles, more_labels = epsilon_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    mae_axis.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    mae_axis.set_title("Heart rate from PPG: non-private vs DP-Adam")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_sweep(runs: list[RunResult], baseline_mae: float, path: Path) -> None:
    """Test MAE against epsilon, one point per noise multiplier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(6, 4))
    epsilons = [run.epsilon for run in runs]
    maes = [run.test_mae_bpm for run in runs]
    axis.plot(epsilons, maes, marker="o")
    for run in runs:
        axis.annotate(f"σ={run.noise_multiplier:g}", (run.epsilon, run.test_mae_bpm), fontsize=8)
    axis.axhline(baseline_mae, color="grey", linestyle=":", label="predict training mean")
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel(f"epsilon (delta={DELTA:g})")
    axis.set_ylabel("test MAE (bpm)")
    axis.set_title("Privacy-utility trade-off")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Heart rate from PPG, non-private vs DP.")
    parser.add_argument(
        "--data-dir", help="folder with PPG-DaLiA S*.pkl (default: $PPG_DALIA_DIR, else synthetic)"
    )
    parser.add_argument("--subject", default="S1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--noise-multiplier", type=float, default=1.1)
    parser.add_argument(
        "--learning-rate", type=float, default=0.01, help="DP-Adam's initial rate (cosine decay)"
    )
    parser.add_argument("--sweep", action="store_true", help="also sweep noise multipliers")
    parser.add_argument("--sweep-noise", type=float, nargs="+", default=[0.6, 0.8, 1.1, 1.6, 2.5])
    parser.add_argument("--output", default="demo-output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    subject, source = load_subject(args.data_dir, args.subject, args.seed)
    arrays = wearable_data.heart_rate_arrays(subject)
    _, y_train, _, y_test = arrays
    n_train = len(y_train)
    # Full batches only: each epoch then takes floor(n / batch) steps, never more than the
    # accountant's ceil(epochs * n / batch) in total, so the printed epsilon is not understated.
    datasets = wearable_data.heart_rate_datasets(
        subject, batch_size=args.batch_size, seed=args.seed, drop_remainder=True
    )
    baseline = training_mean_baseline(y_train, y_test)
    print(f"Data: {source}; {n_train} training sequences of 12 x 2 s steps, 6 features.")

    def run(name: str, learning_rate: float, noise_multiplier: float | None) -> RunResult:
        return train(
            name,
            datasets,
            n_train,
            args.batch_size,
            args.epochs,
            learning_rate,
            noise_multiplier,
            seed=args.seed,
            arrays=arrays,
        )

    runs = [
        run("non-private Adam", 1e-3, None),
        run("DP-Adam", args.learning_rate, args.noise_multiplier),
    ]
    sweep_runs = []
    if args.sweep:
        for noise_multiplier in args.sweep_noise:
            sweep_runs.append(
                run(f"DP-Adam σ={noise_multiplier:g}", args.learning_rate, noise_multiplier)
            )

    print()
    print(
        f"{'model':<22} {'test MAE (bpm)':>15} {'epsilon':>8} {'epochs':>7} {'wall (s)':>9}"
        f" {'MIA AUC':>8} {'MIA eps >=':>10}"
    )
    print(f"{'predict training mean':<22} {baseline:>15.2f} {'-':>8} {'-':>7} {'-':>9}")
    for run in runs + sweep_runs:
        epsilon = f"{run.epsilon:.2f}" if run.epsilon is not None else "-"
        print(
            f"{run.name:<22} {run.test_mae_bpm:>15.2f} {epsilon:>8} {run.epochs:>7} "
            f"{run.wall_seconds:>9.1f} {run.membership_auc:>8.3f} "
            f"{run.membership_epsilon_lower_bound:>10.2f}"
        )
    print(
        f"\nepsilon: delta = {DELTA:g}, {n_train} training examples, batch {args.batch_size}, "
        f"{args.epochs} epochs, RDP accountant.\nIt assumes Poisson sampling of batches; fit() on "
        "a shuffled dataset is close to but not exactly\nthat (pydp_r.data.poisson_batches is).\n"
        "Without DP the model's test MAE is lower, but nothing bounds what it reveals about any\n"
        "one 2-second window of the subject's data. MIA: loss-threshold membership inference,\n"
        "training against test sequences (AUC 0.5 is chance; the implied epsilon is a lower\n"
        "bound). The test part is later in time, so part of any gap is drift, not memorization."
    )

    plot_histories(runs, baseline, output / "training_history.png")
    results = {
        "data": source,
        "n_train": n_train,
        "delta": DELTA,
        "baseline_mae_bpm": baseline,
        "runs": [asdict(run) for run in runs],
        "sweep": [asdict(run) for run in sweep_runs],
    }
    if sweep_runs:
        plot_sweep(sweep_runs, baseline, output / "privacy_utility.png")
    (output / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"Wrote {output}/training_history.png and results.json"
        + (" and privacy_utility.png" if sweep_runs else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
