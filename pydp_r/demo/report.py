"""The demo's report: setup lines, the table over seeds, notes, results.json and plots."""

from __future__ import annotations

import json
import statistics
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pydp_r import accounting
from pydp_r.demo.data import (
    NON_MEMBER_BLOCK_SEQUENCES,
    NON_MEMBER_BLOCKS,
    VALIDATION_SEQUENCES,
    WINDOWS_PER_SEQUENCE,
    DemoData,
)
from pydp_r.demo.recipes import DELTA, Recipe, Recipes, poisson_steps_per_epoch
from pydp_r.demo.runs import RunResult, Runs, say


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def window_level_epsilon(recipe: Recipe, n: int) -> float:
    """Epsilon for one 2-s window by group privacy: a window lies in up to 12 sequences."""
    steps = recipe.epochs * poisson_steps_per_epoch(n, recipe.batch_size)
    return accounting.user_epsilon(
        recipe.noise_multiplier, recipe.batch_size / n, steps, DELTA, WINDOWS_PER_SEQUENCE
    )


def setup_lines(data: DemoData, recipes: Recipes, seeds: list[int]) -> list[str]:
    """What is about to be trained: the data and the DP recipe."""
    private, decay = recipes.private, recipes.private.averaging_decay
    more = " ..." if len(data.sources) > 1 else ""
    return [
        f"Data: {data.sources[0]}{more}; {data.n_train} training sequences "
        f"(one example = one sequence of {WINDOWS_PER_SEQUENCE} x 2-s windows, 6 features), "
        f"{VALIDATION_SEQUENCES} for validation, {NON_MEMBER_BLOCKS} random blocks of "
        f"{NON_MEMBER_BLOCK_SEQUENCES} held out as the attack's non-members, seeds {seeds}.",
        f"DP recipe: batch {private.batch_size} (Poisson), noise multiplier "
        f"{private.noise_multiplier:.3f}, clip {private.l2_norm_clip:g}, {private.epochs} "
        f"epochs, lr {private.learning_rate:g} (cosine), {private.normalization} "
        "normalization, averaging "
        f"{'decay ' + format(decay, 'g') if decay else 'off'}.",
    ]


def summarize(runs: Runs) -> dict[str, dict[str, Any]]:
    """Per model (and sweep recipe): test and validation MAE mean and sd, largest epsilon."""
    summary: dict[str, dict[str, Any]] = {}
    for name, model_runs in _named_runs(runs):
        test_mean, test_sd = mean_and_sd([run.test_mae_bpm for run in model_runs])
        val_mean, val_sd = mean_and_sd([run.validation_mae_bpm for run in model_runs])
        epsilons = [run.epsilon for run in model_runs if run.epsilon is not None]
        summary[name] = {
            "test_mae_bpm_mean": test_mean,
            "test_mae_bpm_sd": test_sd,
            "validation_mae_bpm_mean": val_mean,
            "validation_mae_bpm_sd": val_sd,
            "epsilon": max(epsilons) if epsilons else None,
        }
    return summary


def _named_runs(runs: Runs) -> list[tuple[str, list[RunResult]]]:
    return [*runs.by_model.items(), *((r[0].name, r) for r in runs.sweep.values())]


def table_lines(data: DemoData, runs: Runs, summary: dict[str, dict[str, Any]]) -> list[str]:
    """The table: the training-mean baseline, then each model's mean ± sd over seeds."""
    baseline_mean, baseline_sd = mean_and_sd(data.baselines)
    header = f"{'model':<22} {'test MAE (bpm)':>16} {'val MAE (bpm)':>16} {'epsilon':>8}"
    lines = [
        header + f" {'MIA AUC':>8}",
        f"{'predict training mean':<22} {baseline_mean:>9.2f} ± {baseline_sd:<4.2f}",
    ]
    for name, model_runs in _named_runs(runs):
        row = summary[name]
        epsilon = "-" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
        aucs = [run.membership_auc for run in model_runs if run.membership_auc is not None]
        auc = f"{statistics.fmean(aucs):.3f}" if aucs else "-"
        lines.append(
            f"{name:<22} {row['test_mae_bpm_mean']:>9.2f} ± {row['test_mae_bpm_sd']:<4.2f} "
            f"{row['validation_mae_bpm_mean']:>9.2f} ± {row['validation_mae_bpm_sd']:<4.2f} "
            f"{epsilon:>8} {auc:>8}"
        )
    return lines


def notes(recipes: Recipes, n: int, measured_epsilon: float, window_epsilon: float) -> list[str]:
    """What the epsilon protects, what costs no privacy, and how to read the attack."""
    private = recipes.private
    return [
        f"Privacy unit: one training sequence (12 windows of 2 s, 24 s of wrist data). Epsilon "
        f"{measured_epsilon:.2f} at delta = {DELTA:g} is what PrivacyBudget measured for the "
        f"Poisson-sampled batches that ran ({n} sequences, expected batch "
        f"{private.batch_size}, {private.epochs} epochs). One 2-s window lies in up to "
        f"{WINDOWS_PER_SEQUENCE} sequences; by group privacy the guarantee for any one window "
        f"is epsilon {window_epsilon:.1f}, much weaker.",
        "Parameter averaging is post-processing of the released iterates: it costs no privacy. "
        "Feature scaling and the output prior use public values only. The recipes were tuned "
        "on synthetic subjects 100-102 (public data), not on the evaluation seeds: tuning on "
        "private data would spend privacy too (Papernot & Steinke 2022).",
        f"MIA: loss-threshold membership inference, training sequences against "
        f"{NON_MEMBER_BLOCKS} random blocks of the training span held out of training (their "
        "inner sequences share no window with a training one): i.i.d. non-members, so AUC 0.5 "
        "is chance and any gap is membership, not drift. A member's windows also sit in up to "
        f"{WINDOWS_PER_SEQUENCE} training sequences, a non-member's in none: the attack sees "
        "window membership too, bounded only by the window-level epsilon.",
    ]


def results_json(
    data: DemoData,
    recipes: Recipes,
    runs: Runs,
    seeds: list[int],
    summary: dict[str, dict[str, Any]],
    ratio: float,
    window_epsilon: float,
) -> dict[str, Any]:
    """The content of results.json (its fields are what downstream readers rely on)."""
    return {
        "data": data.sources,
        "seeds": seeds,
        "n_train": data.n_train,
        "validation_sequences": VALIDATION_SEQUENCES,
        "delta": DELTA,
        "privacy_unit": f"one training sequence of {WINDOWS_PER_SEQUENCE} 2-s windows",
        "window_level_epsilon": window_epsilon,
        "baseline_mae_bpm": data.baselines,
        "recipes": {r.name: asdict(r) for r in (recipes.non_private, recipes.private)},
        "tuning": recipes.tuning,
        "summary": summary,
        "dp_to_non_private_mae_ratio": ratio,
        "runs": [asdict(run) for model_runs in runs.by_model.values() for run in model_runs],
        "sweep": [asdict(run) for model_runs in runs.sweep.values() for run in model_runs],
    }


def report(
    data: DemoData, recipes: Recipes, runs: Runs, seeds: list[int], output: Path
) -> dict[str, Any]:
    """Prints the table and notes, writes results.json and the plots; returns the results."""
    summary = summarize(runs)
    say("")
    say("\n".join(table_lines(data, runs, summary)))
    private, non_private = recipes.private.name, recipes.non_private.name
    ratio = summary[private]["test_mae_bpm_mean"] / summary[non_private]["test_mae_bpm_mean"]
    window_epsilon = window_level_epsilon(recipes.private, data.n_train)
    say(f"\nDP / non-private test MAE: {ratio:.2f}x (means over {len(seeds)} seeds).")
    lines = notes(recipes, data.n_train, summary[private]["epsilon"], window_epsilon)
    say("\n".join(textwrap.fill(note, width=88) for note in lines))

    plot_histories(runs.by_model, mean_and_sd(data.baselines)[0], output / "training_history.png")
    results = results_json(data, recipes, runs, seeds, summary, ratio, window_epsilon)
    if runs.sweep:
        plot_sweep(runs.sweep, runs.by_model[non_private], output / "privacy_utility.png")
    (output / "results.json").write_text(json.dumps(results, indent=2))
    say(
        f"Wrote {output}/training_history.png and results.json"
        + (" and privacy_utility.png" if runs.sweep else "")
    )
    return results


def plot_histories(
    runs_by_model: dict[str, list[RunResult]], baseline_mae: float, path: Path
) -> None:
    """Validation MAE per epoch: the mean over seeds and a band of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, runs in runs_by_model.items():
        curves = np.array([run.val_mae_per_epoch for run in runs])
        epochs = np.arange(1, curves.shape[1] + 1)
        mean = curves.mean(axis=0)
        sd = curves.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
        (line,) = axis.plot(epochs, mean, marker="o", markersize=3, label=name)
        axis.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
    axis.axhline(baseline_mae, color="black", linestyle=":", label="predict training mean (test)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation MAE (bpm)")
    axis.set_ylim(0, max(2 * baseline_mae, 1))
    seeds = len(next(iter(runs_by_model.values())))
    axis.set_title(f"Heart rate from PPG: mean ± sd over {seeds} seeds")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_sweep(
    sweep: dict[float, list[RunResult]], non_private: list[RunResult], path: Path
) -> None:
    """Test MAE against epsilon (mean ± sd over seeds), the non-private mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(6, 4))
    epsilons = sorted(sweep)
    stats = [mean_and_sd([run.test_mae_bpm for run in sweep[e]]) for e in epsilons]
    axis.errorbar(
        epsilons, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
        label="DP-Adam",
    )  # fmt: skip
    np_mean, np_sd = mean_and_sd([run.test_mae_bpm for run in non_private])
    axis.axhline(np_mean, color="grey", linestyle="--", label=f"non-private ({np_mean:.2f})")
    axis.axhspan(np_mean - np_sd, np_mean + np_sd, color="grey", alpha=0.15)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel(f"epsilon per training sequence (delta={DELTA:g}, Poisson)")
    axis.set_ylabel("test MAE (bpm)")
    axis.set_title("Privacy-utility trade-off")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
