"""Window averaging and sliding sequences for multi-rate wearable signals.

The R walkthrough builds these with ``dataset_window()`` + ``flat_map`` + ``reduce_mean`` one
element at a time. The same values come out of two reshapes here: a mean over a
``(n_windows, window, features)`` view, then a strided sliding-window view copied once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from pydp_r._checks import check_count

__all__ = ["average_and_make_sequences", "average_windows", "sliding_sequences"]


def _as_2d_signal(data: Any, name: str = "data") -> np.ndarray:
    """Returns ``data`` as a finite ``(samples, features)`` array; a 1-D input is one feature."""
    array = np.asarray(data)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}.")
    if array.ndim == 1:
        array = array[:, np.newaxis]
    elif array.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (samples) or 2-D (samples x features), got shape {array.shape}."
        )
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.argmax(~np.isfinite(array).all(axis=1)))
        raise ValueError(
            f"{name} must contain only finite values; found NaN or infinity at sample {bad}."
        )
    return array


def average_windows(data: Any, window_size_avg: int) -> np.ndarray:
    """Averages consecutive non-overlapping windows of samples, dropping a trailing partial window.

    Args:
        data: Signal, 1-D (samples; treated as one feature) or 2-D (samples x features), numpy
            array or tensor. Values must be finite.
        window_size_avg: Samples per window, integer >= 1 and at most the number of samples. For a
            signal sampled at ``f`` Hz, ``2 * f`` gives one value per 2 s (the label rate).

    Returns:
        float32 array of shape ``(samples // window_size_avg, features)``; row ``i`` is the mean of
        samples ``[i * window_size_avg, (i + 1) * window_size_avg)`` (computed in float64).

    Raises:
        ValueError: If ``data`` is not 1-D/2-D numeric, holds non-finite values, or
            ``window_size_avg`` is not an integer in [1, samples].
    """
    window_size_avg = check_count("window_size_avg", window_size_avg)
    signal = _as_2d_signal(data)
    num_samples, num_features = signal.shape
    if window_size_avg > num_samples:
        raise ValueError(
            f"window_size_avg must be at most the number of samples ({num_samples}), "
            f"got {window_size_avg}."
        )
    num_windows = num_samples // window_size_avg
    windows = signal[: num_windows * window_size_avg].reshape(
        num_windows, window_size_avg, num_features
    )
    return windows.mean(axis=1, dtype=np.float64).astype(np.float32)


def sliding_sequences(data: Any, num_timesteps: int) -> np.ndarray:
    """Cuts a signal into all overlapping sequences of ``num_timesteps`` consecutive rows (shift 1).

    Args:
        data: 1-D (steps; one feature) or 2-D (steps x features) numpy array or tensor, finite.
        num_timesteps: Sequence length in steps, integer in [1, steps].

    Returns:
        float32 array of shape ``(steps - num_timesteps + 1, num_timesteps, features)``; sequence
        ``i`` holds rows ``[i, i + num_timesteps)``.

    Raises:
        ValueError: If ``data`` is not 1-D/2-D numeric, holds non-finite values, or
            ``num_timesteps`` is not an integer in [1, steps].
    """
    num_timesteps = check_count("num_timesteps", num_timesteps)
    steps = _as_2d_signal(data).astype(np.float32, copy=False)
    if num_timesteps > steps.shape[0]:
        raise ValueError(
            f"num_timesteps must be at most the number of steps ({steps.shape[0]}), "
            f"got {num_timesteps}."
        )
    # sliding_window_view puts the window axis last: (sequences, features, timesteps).
    view = np.lib.stride_tricks.sliding_window_view(steps, num_timesteps, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def average_and_make_sequences(
    data: Any, window_size_avg: int, num_timesteps: int
) -> tf.data.Dataset:
    """Window-averages a signal and returns its sliding sequences as a ``tf.data.Dataset``.

    Same values (to float32 rounding) as the R walkthrough's pipeline
    ``dataset_window(window_size_avg) |> flat_map(batch) |> reduce_mean |>
    dataset_window(num_timesteps, shift = 1) |> flat_map(batch)``, computed with array reshapes.

    Args:
        data: Signal, 1-D (samples; one feature) or 2-D (samples x features) numpy array or
            tensor, finite. A trailing partial averaging window is dropped.
        window_size_avg: Samples per averaging window, integer in [1, samples].
        num_timesteps: Averaged steps per sequence, integer in
            [1, samples // window_size_avg].

    Returns:
        Dataset of float32 tensors of shape ``(num_timesteps, features)``, one per start step,
        ``samples // window_size_avg - num_timesteps + 1`` elements in order.

    Raises:
        ValueError: If ``data`` is not 1-D/2-D numeric or holds non-finite values, or either size
            is not a positive integer, or the data yields fewer than ``num_timesteps`` windows.
    """
    check_count("num_timesteps", num_timesteps)
    averaged = average_windows(data, window_size_avg)
    if num_timesteps > averaged.shape[0]:
        raise ValueError(
            f"num_timesteps must be at most the number of averaged windows "
            f"({averaged.shape[0]} = samples // window_size_avg), got {num_timesteps}."
        )
    return tf.data.Dataset.from_tensor_slices(sliding_sequences(averaged, num_timesteps))
