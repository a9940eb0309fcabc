"""Time of a DP-Adam training step relative to a plain Adam step, and peak memory.

Each configuration runs in its own Python process (so peak resident memory is its own):
the model is compiled, warmed up for two epochs (tracing excluded), then `fit()` over
`--steps` batches is timed `--repeats` times; the median time per step is reported.

    python benchmarks/bench_dp_step.py             # all models, fast path and general path
    python benchmarks/bench_dp_step.py --quick     # fewer steps

Models: the R walkthrough's PPG 1-D convnet (BatchNorm replaced by GroupNorm for both runs)
at batch 32, TF Privacy's MNIST tutorial convnet at batch 256, and a 1M-parameter Dense
model at batch 1024 for memory.
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


def _build(name: str):
    import keras

    if name == "ppg":
        layers = [keras.Input((12, 6))]
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
        return keras.Sequential(layers), (12, 6), "mse"
    if name == "mnist":
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(16, 8, strides=2, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2, 1),
                keras.layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu"),
                keras.layers.MaxPooling2D(2, 1),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        return model, (28, 28, 1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Sequential(
        [keras.Input((1000,)), keras.layers.Dense(1000, activation="relu"), keras.layers.Dense(1)]
    )
    return model, (1000,), "mse"


def run_one(name: str, optimizer_kind: str, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per step and peak RSS (MiB) of one configuration, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import pydp_r
    from pydp_r import fast_clipping

    if optimizer_kind == "dp-general":
        fast_clipping.unsupported_reason = lambda model: "benchmark forces the general path"
    keras.utils.set_random_seed(0)
    model, input_shape, loss = _build(name)
    batch_size = BATCH_SIZES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size * steps, *input_shape)).astype("float32")
    if name == "mnist":
        y = rng.integers(0, 10, size=batch_size * steps)
    else:
        y = rng.normal(size=(batch_size * steps, 1)).astype("float32")
    if optimizer_kind == "plain":
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        optimizer = pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1, learning_rate=1e-3)
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(x[: batch_size * 2], y[: batch_size * 2], batch_size=batch_size, epochs=2, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        times.append((time.perf_counter() - start) / steps)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds_per_step": float(np.median(times)), "peak_rss_mib": peak_mib}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 steps, 3 repeats")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "OPTIMIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 3
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.steps, args.repeats)))
        return 0

    print(
        f"{'model':8} {'batch':>5} {'plain ms':>9} {'DP ms':>8} {'ratio':>6} "
        f"{'general ms':>10} {'ratio':>6} {'plain MiB':>9} {'DP MiB':>7} {'general MiB':>11}"
    )
    for name in args.models:
        results = {}
        for kind in ("plain", "dp", "dp-general"):
            command = [sys.executable, __file__, "--one", name, kind]
            command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[kind] = json.loads(output.strip().splitlines()[-1])
        plain = results["plain"]["seconds_per_step"]
        print(
            f"{name:8} {BATCH_SIZES[name]:>5} {plain * 1e3:>9.1f} "
            f"{results['dp']['seconds_per_step'] * 1e3:>8.1f} "
            f"{results['dp']['seconds_per_step'] / plain:>6.2f} "
            f"{results['dp-general']['seconds_per_step'] * 1e3:>10.1f} "
            f"{results['dp-general']['seconds_per_step'] / plain:>6.2f} "
            f"{results['plain']['peak_rss_mib']:>9.0f} {results['dp']['peak_rss_mib']:>7.0f} "
            f"{results['dp-general']['peak_rss_mib']:>11.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
