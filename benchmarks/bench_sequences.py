"""Time of the walkthrough's window-averaging pipeline against the vectorized one, on S1 sizes.

On a subject of PPG-DaLiA size (4,603 labels: wrist ACC 294,784 x 3, BVP 589,568, EDA and TEMP
36,848), the walkthrough's pipeline (``dataset_window`` + ``flat_map`` + ``reduce_mean``,
transcribed to Python tf.data) and the vectorized one are timed on the same work, after checking
that they give the same values:

- the eight ``average_and_make_sequences`` calls of the walkthrough (four signals, training and
  test part), each dataset read to the end in batches of 32 (as ``fit`` reads), and one sequence at
  a time (there Python's per-element iteration, about 20 us, bounds the vectorized side);
- the whole x_train / x_test: the walkthrough's eight calls zipped and concatenated, against
  ``heart_rate_datasets`` (batches of 32, unshuffled) and ``heart_rate_arrays`` (numpy).

One warm-up run is excluded; the median of ``--repeats`` runs is reported.

    python benchmarks/bench_sequences.py              # 5 repeats
    python benchmarks/bench_sequences.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pydp_r.data import (  # noqa: E402
    average_and_make_sequences,
    heart_rate_arrays,
    heart_rate_datasets,
    synthetic_ppg_subject,
)

WINDOWS = {"ACC": 64, "BVP": 128, "EDA": 8, "TEMP": 8}
TRAIN_MAX, NUM_TIMESTEPS = 4000, 12


@tf.autograph.experimental.do_not_convert
def walkthrough_average_and_make_sequences(data, window_size_avg: int, num_timesteps: int):
    """The R walkthrough's function, transcribed to Python tf.data."""
    return (
        tf.data.Dataset.from_tensor_slices(tf.cast(data, tf.float32))
        .window(window_size_avg)
        .flat_map(lambda window: window.batch(window_size_avg, drop_remainder=True))
        .map(lambda batch: tf.reduce_mean(batch, axis=0))
        .window(num_timesteps, shift=1)
        .flat_map(lambda steps: steps.batch(num_timesteps, drop_remainder=True))
    )


def build_inputs(subject: dict, make_sequences: Callable) -> tuple[tf.data.Dataset, ...]:
    """The walkthrough's x_train and x_test: per-signal sequences, zipped, concatenated."""
    n_labels = subject["label"].size
    parts: dict[str, list] = {"train": [], "test": []}
    for name, window in WINDOWS.items():
        values = subject["signal"]["wrist"][name][: n_labels * window]
        split = TRAIN_MAX * window
        parts["train"].append(make_sequences(values[:split], window, NUM_TIMESTEPS))
        parts["test"].append(make_sequences(values[split:], window, NUM_TIMESTEPS))
    return tuple(
        tf.data.Dataset.zip(tuple(parts[key])).map(lambda *xs: tf.concat(xs, axis=1))
        for key in ("train", "test")
    )


def read(datasets: tuple[tf.data.Dataset, ...], batch_size: int | None) -> int:
    count = 0
    for dataset in datasets:
        if batch_size:
            dataset = dataset.batch(batch_size)
        for element in dataset:
            count += int(element.shape[0]) if batch_size else 1
    return count


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: tracing and first allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up")
    args = parser.parse_args()

    subject = synthetic_ppg_subject(n_labels=4603, seed=0, include_chest=False)

    # Same values first: otherwise the timing compares different work.
    reference = [
        np.stack(list(ds.as_numpy_iterator()))
        for ds in build_inputs(subject, walkthrough_average_and_make_sequences)
    ]
    ours = heart_rate_arrays(subject, TRAIN_MAX, NUM_TIMESTEPS)
    np.testing.assert_allclose(ours[0], reference[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours[2], reference[1], rtol=1e-5, atol=1e-4)
    print(f"same values; sequences: train {ours[0].shape}, test {ours[2].shape}")

    def per_signal(make: Callable, batch_size: int | None) -> Callable[[], int]:
        """Each of the eight calls on its own, its dataset read to the end."""

        def run() -> int:
            n_labels = subject["label"].size
            count = 0
            for name, window in WINDOWS.items():
                values = subject["signal"]["wrist"][name][: n_labels * window]
                split = TRAIN_MAX * window
                for part in (values[:split], values[split:]):
                    count += read((make(part, window, NUM_TIMESTEPS),), batch_size)
            return count

        return run

    def ours_end_to_end() -> int:
        datasets = heart_rate_datasets(subject, TRAIN_MAX, NUM_TIMESTEPS, 32, shuffle=False)
        return sum(int(x.shape[0]) for dataset in datasets for x, _ in dataset)

    walkthrough = walkthrough_average_and_make_sequences
    rows = [
        (
            "average_and_make_sequences, 8 calls, read in batches of 32",
            per_signal(walkthrough, 32),
            per_signal(average_and_make_sequences, 32),
        ),
        (
            "average_and_make_sequences, 8 calls, read one sequence at a time",
            per_signal(walkthrough, None),
            per_signal(average_and_make_sequences, None),
        ),
        (
            "x_train and x_test as datasets (zip + concat vs heart_rate_datasets), batches of 32",
            lambda: read(build_inputs(subject, walkthrough), 32),
            ours_end_to_end,
        ),
        (
            "x_train and x_test as arrays (walkthrough read in batches vs heart_rate_arrays)",
            lambda: read(build_inputs(subject, walkthrough), 32),
            lambda: heart_rate_arrays(subject, TRAIN_MAX, NUM_TIMESTEPS),
        ),
    ]
    print(f"median of {args.repeats} runs, warm-up excluded (seconds):")
    for title, slow_run, fast_run in rows:
        slow = median_seconds(slow_run, args.repeats)
        fast = median_seconds(fast_run, args.repeats)
        print(f"  {title}")
        print(f"    walkthrough {slow:8.4f}  vectorized {fast:8.4f}  ratio {slow / fast:7.1f}x")


if __name__ == "__main__":
    main()
