"""Time of a DP-Adam training step relative to a plain Adam step, and peak memory.

Timing: one process compiles the same model twice, with plain Adam and with DP-Adam (on the
fast path; in a second process, forced onto the general per-example path), warms both up
(tracing excluded), then times `fit()` epochs of `--steps` batches alternately, `--repeats`
rounds. The ratio is the median over rounds of DP time / plain time of the same round, so load
changes on a shared machine affect both sides alike. Peak memory: each configuration in its
own process (peak resident set size of a short run).

    python benchmarks/bench_dp_step.py             # all models
    python benchmarks/bench_dp_step.py --quick     # fewer steps and rounds

Models: the R walkthrough's PPG 1-D convnet (BatchNorm replaced by GroupNorm for both runs)
at batch 32, TF Privacy's MNIST tutorial convnet at batch 256, and a 1M-parameter Dense
model at batch 1024 for memory. The general path, slow on the Dense model, is timed over at
most 10 steps per round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODELS = ("ppg", "mnist", "dense1m")
BATCH_SIZES = {"ppg": 32, "mnist": 256, "dense1m": 1024}
INPUT_SHAPES = {"ppg": (12, 6), "mnist": (28, 28, 1), "dense1m": (1000,)}
KINDS = ("plain", "dp", "dp-general")
GENERAL_MAX_STEPS = 10


def _build(name: str):
    """The benchmark's model (input shape `INPUT_SHAPES[name]`) and its loss."""
    import keras

    inputs = keras.Input(INPUT_SHAPES[name])
    if name == "ppg":
        layers = [inputs]
        for filters, kernel in ((32, 3), (64, 5), (128, 5)):
            layers += [
                keras.layers.Conv1D(filters, kernel, activation="relu"),
                keras.layers.GroupNormalization(32),
            ]
        layers += [
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(1),
        ]
        return keras.Sequential(layers), "mse"
    if name == "mnist":
        model = keras.Sequential(
            [
                inputs,
                keras.layers.Conv2D(16, 8, strides=2, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2, 1),
                keras.layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu"),
                keras.layers.MaxPooling2D(2, 1),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Sequential(
        [inputs, keras.layers.Dense(1000, activation="relu"), keras.layers.Dense(1)]
    )
    return model, "mse"


def _compiled(name: str, kind: str, general_models: set[int]):
    """A freshly built, compiled model for one configuration (same initial weights each time)."""
    import keras

    import pydp_r

    keras.utils.set_random_seed(0)
    model, loss = _build(name)
    if kind == "plain":
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        optimizer = pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1, learning_rate=1e-3)
    if kind == "dp-general":
        general_models.add(id(model))
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _data(name: str, steps: int):
    import numpy as np

    batch_size = BATCH_SIZES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size * steps, *INPUT_SHAPES[name])).astype("float32")
    if name == "mnist":
        y = rng.integers(0, 10, size=batch_size * steps)
    else:
        y = rng.normal(size=(batch_size * steps, 1)).astype("float32")
    return x, y


def _force_general_path(general_models: set[int]) -> None:
    """Send the models whose ids are in `general_models` to the general per-example path."""
    from pydp_r.step import fast_clipping

    fast_path_reason = fast_clipping.unsupported_reason

    def unsupported_reason(model):
        if id(model) in general_models:
            return "benchmark forces the general path"
        return fast_path_reason(model)

    fast_clipping.unsupported_reason = unsupported_reason


def time_interleaved(name: str, dp_kind: str, steps: int, repeats: int) -> dict[str, float]:
    """Per-step seconds of plain and `dp_kind` (medians over rounds), and the median ratio."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    general_models: set[int] = set()
    _force_general_path(general_models)
    batch_size = BATCH_SIZES[name]
    if dp_kind == "dp-general":
        steps = min(steps, GENERAL_MAX_STEPS)
    x, y = _data(name, steps)
    models = {kind: _compiled(name, kind, general_models) for kind in ("plain", dp_kind)}
    for model in models.values():
        warm = batch_size * 2
        model.fit(x[:warm], y[:warm], batch_size=batch_size, epochs=2, verbose=0)
    seconds: dict[str, list[float]] = {kind: [] for kind in models}
    for round_index in range(repeats):
        kinds = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for kind in kinds:
            start = time.perf_counter()
            models[kind].fit(x, y, batch_size=batch_size, verbose=0, shuffle=False)
            seconds[kind].append((time.perf_counter() - start) / steps)
    ratios = np.array(seconds[dp_kind]) / np.array(seconds["plain"])
    return {
        "plain": float(np.median(seconds["plain"])),
        dp_kind: float(np.median(seconds[dp_kind])),
        "ratio": float(np.median(ratios)),
    }


def peak_memory(name: str, kind: str) -> float:
    """Peak resident set size (MiB) of this process after a short run of one configuration."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    general_models: set[int] = set()
    _force_general_path(general_models)
    model = _compiled(name, kind, general_models)
    x, y = _data(name, 3)
    model.fit(x, y, batch_size=BATCH_SIZES[name], epochs=2, verbose=0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_subprocess(*arguments: str) -> object:
    command = [sys.executable, __file__, *arguments]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10 steps, 3 rounds")
    parser.add_argument("--timing", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 3
    if args.timing:
        print(json.dumps(time_interleaved(*args.timing, args.steps, args.repeats)))
        return 0
    if args.memory:
        print(json.dumps(peak_memory(*args.memory)))
        return 0

    print(
        f"{'model':8} {'batch':>5} {'plain ms':>9} {'DP ms':>8} {'ratio':>6} "
        f"{'general ms':>10} {'ratio':>6} {'plain MiB':>9} {'DP MiB':>7} {'general MiB':>11}"
    )
    for name in args.models:
        rounds = ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        fast = _in_subprocess("--timing", name, "dp", *rounds)
        general = _in_subprocess("--timing", name, "dp-general", *rounds)
        memory = {kind: _in_subprocess("--memory", name, kind) for kind in KINDS}
        print(
            f"{name:8} {BATCH_SIZES[name]:>5} {fast['plain'] * 1e3:>9.1f} {fast['dp'] * 1e3:>8.1f} "
            f"{fast['ratio']:>6.2f} {general['dp-general'] * 1e3:>10.1f} {general['ratio']:>6.2f} "
            f"{memory['plain']:>9.0f} {memory['dp']:>7.0f} {memory['dp-general']:>11.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
