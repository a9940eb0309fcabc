"""poisson_batches: independent inclusion at the given rate, fixed shapes, zero-weight padding."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import pydp_r
from pydp_r.accounting import compute_epsilon
from pydp_r.callbacks import PrivacyBudget
from pydp_r.data.sampling import poisson_batch_size_bound, poisson_batches


def numbered_data(n):
    """x holds 1..n, so each row names its example; y and the weights repeat it."""
    ids = np.arange(1, n + 1)
    x = np.stack([ids, -ids], axis=1).astype("float32")
    y = (10 * ids).astype("float32")[:, None]
    return x, y, (ids / 100).astype("float32")


def selected_ids(batch):
    x, _, weights = (np.asarray(part) for part in batch)
    return x[weights > 0, 0].astype(int)


def inclusion_matrix(dataset, n):
    rows = []
    for batch in dataset:
        included = np.zeros(n, bool)
        included[selected_ids(batch) - 1] = True
        rows.append(included)
    return np.array(rows)


def test_each_example_is_included_independently_at_the_sampling_rate():
    n, rate, steps = 40, 0.2, 1500
    dataset = poisson_batches(numbered_data(n), rate, seed=0, steps=steps)
    included = inclusion_matrix(dataset, n)
    assert included.shape == (steps, n)
    # Per example: Binomial(steps, rate) counts, each within 5 standard deviations.
    per_example = included.sum(axis=0)
    sd = math.sqrt(steps * rate * (1 - rate))
    assert np.all(np.abs(per_example - steps * rate) < 5 * sd)
    # Pooled over examples the rate is pinned down much more tightly.
    assert included.mean() == pytest.approx(rate, abs=5 * sd / steps / math.sqrt(n))
    # Batch sizes vary like Binomial(n, rate): not a fixed-size sample.
    sizes = included.sum(axis=1)
    assert sizes.var() == pytest.approx(n * rate * (1 - rate), rel=0.15)
    # Independence: inclusions of different examples are uncorrelated.
    correlation = np.corrcoef(included.T.astype(float))
    off_diagonal = correlation[~np.eye(n, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / math.sqrt(steps)


def test_batches_have_one_fixed_shape_and_padding_weighs_zero():
    n = 30
    x, y, weights = numbered_data(n)
    dataset = poisson_batches((x, y, weights), 0.3, max_batch_size=15, seed=1, steps=50)
    x_spec, y_spec, w_spec = dataset.element_spec
    assert x_spec.shape == (15, 2) and y_spec.shape == (15, 1) and w_spec.shape == (15,)
    assert int(dataset.cardinality()) == 50
    for batch_x, batch_y, batch_w in dataset:
        batch_x, batch_y, batch_w = batch_x.numpy(), batch_y.numpy(), batch_w.numpy()
        assert batch_x.shape == (15, 2)
        real = batch_w > 0
        ids = batch_x[real, 0].astype(int)
        assert len(set(ids)) == len(ids)
        # Rows stay aligned: x, y and the weight belong to the same example.
        np.testing.assert_array_equal(batch_x[real, 1], -ids)
        np.testing.assert_array_equal(batch_y[real, 0], 10 * ids)
        np.testing.assert_allclose(batch_w[real], ids / 100, rtol=1e-6)
        # Padding rows are all zeros with weight zero, and come after the real ones.
        assert not np.any(batch_w[real.sum() :])
        assert not np.any(batch_x[~real]) and not np.any(batch_y[~real])


def test_same_seed_same_epochs_and_every_epoch_is_fresh():
    data = numbered_data(50)

    def two_epochs(seed):
        dataset = poisson_batches(data, 0.1, seed=seed)
        return [[tuple(selected_ids(b)) for b in dataset] for _ in range(2)]

    first, again, other = two_epochs(7), two_epochs(7), two_epochs(8)
    assert first == again
    assert first != other
    assert first[0] != first[1]  # a new draw each epoch, as the accounting assumes


def test_overflow_keeps_a_uniformly_random_subset():
    n, steps = 20, 600
    dataset = poisson_batches(numbered_data(n), 0.5, max_batch_size=10, seed=3, steps=steps)
    included = inclusion_matrix(dataset, n)
    # P(Binomial(20, 0.5) > 10) = 0.41: those batches are cut to exactly 10, the rest kept.
    sizes = included.sum(axis=1)
    assert sizes.max() == 10
    assert 0.4 < (sizes == 10).mean() < 0.8
    # Truncation must not favour low or high indices.
    per_example = included.sum(axis=0)
    expected = per_example.mean()
    assert np.all(np.abs(per_example - expected) < 5 * math.sqrt(expected))


def test_max_batch_size_below_the_expected_batch_is_refused():
    with pytest.raises(ValueError, match=r"\[5, 10\]"):
        poisson_batches(numbered_data(10)[:2], 0.5, max_batch_size=4)


def test_unseeded_batches_ignore_the_global_seed():
    data = numbered_data(50)
    keras.utils.set_random_seed(0)
    first = inclusion_matrix(poisson_batches(data, 0.3, steps=5), 50)
    keras.utils.set_random_seed(0)
    second = inclusion_matrix(poisson_batches(data, 0.3, steps=5), 50)
    assert not np.array_equal(first, second)


def test_native_pipeline_has_no_python_generator():
    dataset = poisson_batches(numbered_data(10)[:2], 0.5, seed=0)
    # A generator-backed dataset cannot be serialized to a graph; a native one can.
    assert dataset._as_serialized_graph() is not None


def test_default_batch_bound_and_epoch_length():
    for n, rate in [(1000, 0.01), (60000, 256 / 60000), (50, 0.5)]:
        bound = poisson_batch_size_bound(n, rate)
        assert stats.binom.sf(bound, n, rate) <= 1e-6 < stats.binom.sf(bound - 1, n, rate)
    assert poisson_batch_size_bound(10, 1.0) == 10
    x, y, _ = numbered_data(1000)
    dataset = poisson_batches((x, y), 0.01, seed=0)
    assert dataset.element_spec[0].shape[0] == poisson_batch_size_bound(1000, 0.01)
    assert int(dataset.cardinality()) == 100
    assert int(poisson_batches((x, y), 0.3, seed=0).cardinality()) == 3  # floor(1 / 0.3)
    assert int(poisson_batches((x, y), 1.0, seed=0).cardinality()) == 1
    # Full inclusion: every example, every time, no padding.
    (batch,) = list(poisson_batches((x[:5], y[:5]), 1.0, seed=0))
    np.testing.assert_array_equal(np.sort(selected_ids(batch)), np.arange(1, 6))


def test_dict_data_and_multi_input_structures():
    x, y, w = numbered_data(20)
    dataset = poisson_batches(
        {"x": {"a": x, "b": x[:, :1]}, "y": y, "sample_weight": w}, 0.5, seed=0, steps=3
    )
    x_spec, y_spec, _ = dataset.element_spec
    assert set(x_spec) == {"a", "b"} and x_spec["b"].shape == (x_spec["a"].shape[0], 1)
    for batch_x, _, batch_w in dataset:
        real = batch_w.numpy() > 0
        np.testing.assert_array_equal(batch_x["b"].numpy()[:, 0], batch_x["a"].numpy()[:, 0])
        assert np.all(batch_x["a"].numpy()[real, 0] > 0)


@pytest.mark.slow  # over 3 s: the full tier
def test_trains_with_fit_and_a_dp_optimizer():
    rng = np.random.default_rng(0)
    n, rate = 200, 0.1
    x = rng.normal(size=(n, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=pydp_r.DPSGD(l2_norm_clip=5.0, noise_multiplier=0.5, learning_rate=0.5),
        loss="mse",
    )
    before = model.evaluate(x, y, verbose=0)
    budget = PrivacyBudget(n, int(rate * n), 1e-5)
    history = model.fit(
        poisson_batches((x, y), rate, seed=0),
        epochs=4,
        shuffle=False,
        callbacks=[budget],
        verbose=0,
    )
    assert len(history.history["loss"]) == 4
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.evaluate(x, y, verbose=0) < before
    # The default fixed size can cut a batch: accounted exactly (PLD), close to the Poisson
    # figure without truncation.
    assert budget.accountant_used == "pld"
    untruncated = compute_epsilon(n, 20, 0.5, 4, 1e-5, accountant="pld")
    assert history.history["epsilon"][-1] == pytest.approx(untruncated, rel=2e-3)


def test_reported_loss_is_the_mean_over_real_rows_not_padding():
    n = 400
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (10 + x.sum(axis=1, keepdims=True)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(
        optimizer=pydp_r.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.0),
        loss="mse",
        metrics=["mae"],
    )
    dataset = poisson_batches((x, y), 0.1, seed=4)
    history = model.fit(dataset, epochs=1, verbose=0)
    # With learning rate 0 the model predicts 0: the loss of a real row is y^2.
    rows = [np.asarray(by)[np.asarray(bw) > 0] for _, by, bw in dataset]
    # The dataset is re-drawn per pass, so compare with the population mean, within sampling error.
    expected = float(np.mean(y**2))
    assert history.history["loss"][0] == pytest.approx(expected, rel=0.05)
    assert history.history["mae"][0] == pytest.approx(float(np.mean(np.abs(y))), rel=0.05)
    assert all(len(r) < 60 for r in rows)


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, math.nan, "x"])
def test_bad_sampling_rate(rate):
    with pytest.raises(ValueError, match=r"sampling_rate must be a number in \(0, 1\]"):
        poisson_batches(numbered_data(10)[:2], rate)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch_size": 0}, "max_batch_size must be a positive integer"),
        ({"max_batch_size": 11}, r"max_batch_size must be an integer in .* = \[5, 10\]"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"seed": -1}, "seed must be an integer >= 0 or None"),
    ],
)
def test_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        poisson_batches(numbered_data(10)[:2], 0.5, **kwargs)


def test_bad_data():
    x, y, _ = numbered_data(10)
    with pytest.raises(ValueError, match="same first dimension n"):
        poisson_batches((x, y[:9]), 0.5)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\)"):
        poisson_batches((x, y, np.ones(9)), 0.5)
    with pytest.raises(ValueError, match="keys 'x' and 'y'"):
        poisson_batches({"features": x, "y": y}, 0.5)
    with pytest.raises(ValueError, match="data must be a tuple"):
        poisson_batches(x, 0.5)


def test_a_list_of_inputs_stays_several_inputs():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(40, 3)), rng.normal(size=(40, 5))
    y = rng.normal(size=(40, 1))
    first, second = keras.Input((3,)), keras.Input((5,))
    joined = keras.layers.Concatenate()([keras.layers.Dense(2)(first), second])
    model = keras.Model([first, second], keras.layers.Dense(1)(joined))
    model.compile(optimizer=pydp_r.DPSGD(1.0, 1.0), loss="mse")
    dataset = poisson_batches(([x1, x2], y), 0.25, seed=0)
    (batch_x, _, _) = next(iter(dataset))
    assert isinstance(batch_x, tuple) and [t.shape[1] for t in batch_x] == [3, 5]
    model.fit(dataset, epochs=1, verbose=0)
    assert model.optimizer.privacy_ledger.steps == 4


def fixed_poisson_dataset(batch, like):
    """One given batch as a dataset that carries the sampling of `like` (a poisson_batches)."""
    dataset = tf.data.Dataset.from_tensors(tuple(batch))
    dataset.pydp_r_poisson_sampling = like.pydp_r_poisson_sampling
    return dataset


def test_the_step_skips_padding_rows_and_still_divides_by_the_fixed_batch_size():
    x, y, _ = numbered_data(60)
    x, y = x / 60, y / 600
    like = poisson_batches((x, y), 0.2, max_batch_size=24, seed=3)
    batch_x, batch_y, weights = next(iter(like))
    assert 0 < int(np.sum(weights > 0)) < 24  # some padding to skip
    batch_shapes = []

    class BatchShape(keras.layers.Layer):
        def call(self, inputs):
            batch_shapes.append(inputs.shape[0])  # at trace time
            return inputs

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), BatchShape(), keras.layers.Dense(1)])
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = pydp_r.DPSGD(l2_norm_clip=0.05, noise_multiplier=0.0, learning_rate=1.0)
    model.compile(optimizer=optimizer, loss="mse")
    kernel, bias = (w.numpy().copy() for w in model.trainable_weights)
    model.fit(fixed_poisson_dataset((batch_x, batch_y, weights), like), epochs=1, verbose=0)
    # The traced step saw a batch of unknown size (the real rows), not the 24 padded ones.
    assert batch_shapes and 24 not in batch_shapes[1:]
    # By hand: each real example's gradient clipped to 0.05, summed, divided by 24.
    total = np.zeros(3)
    for row, target, weight in zip(batch_x.numpy(), batch_y.numpy(), weights.numpy(), strict=True):
        if weight > 0:
            error = row @ kernel[:, 0] + bias[0] - target[0]
            gradient = 2 * weight * error * np.append(row, 1.0)
            total += gradient * min(1.0, 0.05 / np.linalg.norm(gradient))
    update = np.append(model.trainable_weights[0].numpy()[:, 0], model.trainable_weights[1].numpy())
    np.testing.assert_allclose(update - np.append(kernel[:, 0], bias), -total / 24, atol=1e-6)


def test_a_batch_that_drew_no_example_changes_nothing():
    x, y, _ = numbered_data(30)
    like = poisson_batches((x / 30, y / 300), 0.1, max_batch_size=8, seed=0)
    empty = (np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32"), np.zeros(8, "float32"))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = pydp_r.DPSGD(l2_norm_clip=1.0, noise_multiplier=0.0, learning_rate=1.0)
    model.compile(optimizer=optimizer, loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(fixed_poisson_dataset(empty, like), epochs=1, verbose=0)
    for weight, old in zip(model.trainable_weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), old)
    assert np.isfinite(history.history["loss"][0])
