"""Window averaging and sliding sequences against the R walkthrough's tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from pydp_r.data import average_and_make_sequences, average_windows, sliding_sequences


@tf.autograph.experimental.do_not_convert
def _walkthrough_pipeline(data: np.ndarray, window_size_avg: int, num_timesteps: int) -> np.ndarray:
    """The walkthrough's average_and_make_sequences, transcribed from R to Python tf.data."""
    if data.ndim == 1:  # the R code passes matrix(): one column
        data = data[:, np.newaxis]

    def batch_window(window):
        return window.batch(window_size_avg, drop_remainder=True)

    def mean_over_window(batch):
        return tf.reduce_mean(batch, axis=0)

    def batch_sequence(window):
        return window.batch(num_timesteps, drop_remainder=True)

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.cast(data, tf.float32))
        .window(window_size_avg)
        .flat_map(batch_window)
        .map(mean_over_window)
        .window(num_timesteps, shift=1)
        .flat_map(batch_sequence)
    )
    return np.stack(list(dataset.as_numpy_iterator()))


CASES = [
    # (shape, window_size_avg, num_timesteps): 1-D and 2-D, lengths not divisible by the window
    ((1000,), 7, 5),
    ((1003, 3), 8, 12),
    ((517, 2), 64, 3),
    ((300, 1), 1, 4),
    ((129,), 128, 1),
    ((250, 6), 10, 25),
]


@pytest.mark.parametrize("shape, window_size_avg, num_timesteps", CASES)
def test_matches_walkthrough_pipeline(shape, window_size_avg, num_timesteps):
    rng = np.random.default_rng(len(shape) * 1000 + window_size_avg)
    data = rng.normal(3.0, 10.0, size=shape)
    expected = _walkthrough_pipeline(data, window_size_avg, num_timesteps)
    dataset = average_and_make_sequences(data, window_size_avg, num_timesteps)
    actual = np.stack(list(dataset.as_numpy_iterator()))
    num_features = 1 if len(shape) == 1 else shape[1]
    assert dataset.element_spec.shape == (num_timesteps, num_features)
    assert dataset.element_spec.dtype == tf.float32
    assert actual.shape == expected.shape
    assert actual.shape[0] == shape[0] // window_size_avg - num_timesteps + 1
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_accepts_tensors_like_arrays():
    data = np.random.default_rng(0).normal(size=(200, 2))
    from_tensor = average_windows(tf.constant(data), 16)
    np.testing.assert_array_equal(from_tensor, average_windows(data, 16))


def test_average_windows_values_and_dropped_tail():
    data = np.arange(11, dtype=np.float64)  # windows of 4: [0..3], [4..7]; 8, 9, 10 dropped
    averaged = average_windows(data, 4)
    assert averaged.dtype == np.float32
    np.testing.assert_array_equal(averaged, [[1.5], [5.5]])


def test_sliding_sequences_are_consecutive_rows():
    steps = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    sequences = sliding_sequences(steps, 7)
    assert sequences.shape == (24, 7, 4)
    for start in (0, 11, 23):
        np.testing.assert_array_equal(sequences[start], steps[start : start + 7])
    # A copy, not a view into the input: writing to it leaves the input alone.
    sequences[0, 0, 0] = 1e6
    assert steps[0, 0] != 1e6


@pytest.mark.parametrize("window_size_avg", [0, -3, 2.5, True, "8", None])
def test_rejects_bad_window_size(window_size_avg):
    with pytest.raises(ValueError, match="window_size_avg"):
        average_and_make_sequences(np.zeros(100), window_size_avg, 2)


@pytest.mark.parametrize("num_timesteps", [0, -1, 1.5, False])
def test_rejects_bad_num_timesteps(num_timesteps):
    with pytest.raises(ValueError, match="num_timesteps"):
        average_and_make_sequences(np.zeros(100), 4, num_timesteps)


def test_rejects_window_longer_than_data():
    with pytest.raises(ValueError, match=r"window_size_avg.*\(50\).*got 64"):
        average_windows(np.zeros((50, 3)), 64)


def test_rejects_num_timesteps_longer_than_averaged_data():
    # 100 samples in windows of 8 give 12 steps: 13 timesteps cannot fit, 12 can.
    with pytest.raises(ValueError, match=r"num_timesteps.*\(12 .*got 13"):
        average_and_make_sequences(np.zeros(100), 8, 13)
    assert len(list(average_and_make_sequences(np.zeros(100), 8, 12))) == 1
    with pytest.raises(ValueError, match="num_timesteps"):
        sliding_sequences(np.zeros((5, 2)), 6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_values(bad):
    data = np.ones((40, 2))
    data[17, 1] = bad
    with pytest.raises(ValueError, match="finite.*sample 17"):
        average_and_make_sequences(data, 4, 2)


@pytest.mark.parametrize(
    "data", [np.zeros((4, 4, 4)), np.zeros(()), np.array(["a", "b"]), np.zeros((10, 0))]
)
def test_rejects_bad_shapes_and_types(data):
    with pytest.raises(ValueError, match="data"):
        average_windows(data, 1)
