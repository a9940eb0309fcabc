"""Per-example clipping: the clipped sum against closed forms on a linear loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pydp_r.step import clipping


def test_clip_factors_leave_small_norms_and_scale_large_ones_to_the_bound():
    squared_norms = tf.constant([0.0, 0.25, 1.0, 4.0, 100.0])
    factors = clipping.clip_factors(squared_norms, l2_norm_clip=1.0).numpy()
    np.testing.assert_allclose(factors, [1.0, 1.0, 1.0, 0.5, 0.1], rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(
    clip=st.floats(min_value=0.05, max_value=20.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_clipped_sum_of_linear_loss_equals_closed_form(clip, seed):
    # loss_i = w . x_i has gradient x_i with respect to w, so the clipped sum is known exactly.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 5)).astype("float32") * rng.uniform(0.1, 10, size=(9, 1)).astype(
        "float32"
    )
    w = tf.Variable(tf.zeros(5))
    sums, losses, _, num_units = clipping.clipped_gradient_sum(
        lambda unit: (tf.reduce_mean(tf.linalg.matvec(unit, w)), ()), tf.constant(x), [w], clip
    )
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    expected = (x * np.minimum(1.0, clip / norms)).sum(axis=0)
    np.testing.assert_allclose(sums[0].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert int(num_units) == 9
    assert losses.shape == (9,)


def test_every_unit_contributes_at_most_the_bound():
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 3)) * 50, tf.float32)
    w = tf.Variable(tf.zeros(3))
    sums, _, _, _ = clipping.clipped_gradient_sum(
        lambda unit: (tf.reduce_mean(tf.linalg.matvec(unit, w)), ()), x[:1], [w], 0.7
    )
    assert np.linalg.norm(sums[0].numpy()) == pytest.approx(0.7, rel=1e-5)


def test_microbatches_clip_the_mean_gradient_of_each_microbatch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4)).astype("float32") * 5
    w = tf.Variable(tf.zeros(4))
    sums, losses, _, num_units = clipping.clipped_gradient_sum(
        lambda unit: (tf.reduce_mean(tf.linalg.matvec(unit, w)), ()),
        tf.constant(x),
        [w],
        1.0,
        num_microbatches=2,
    )
    means = x.reshape(2, 4, 4).mean(axis=1)
    expected = (means * np.minimum(1.0, 1.0 / np.linalg.norm(means, axis=1, keepdims=True))).sum(0)
    np.testing.assert_allclose(sums[0].numpy(), expected, rtol=1e-5)
    assert int(num_units) == 2 and losses.shape == (2,)


def test_microbatches_that_do_not_divide_the_batch_are_refused():
    w = tf.Variable(tf.zeros(2))
    with pytest.raises(ValueError, match="num_microbatches"):
        clipping.clipped_gradient_sum(
            lambda unit: (tf.reduce_sum(unit * w), ()), tf.ones((5, 2)), [w], 1.0, 2
        )


def test_aux_outputs_come_back_in_batch_order():
    x = tf.reshape(tf.range(12, dtype=tf.float32), (6, 2))
    w = tf.Variable(tf.ones(2))
    _, _, aux, _ = clipping.clipped_gradient_sum(
        lambda unit: (tf.reduce_mean(tf.linalg.matvec(unit, w)), unit * 2.0), x, [w], 1.0, 3
    )
    np.testing.assert_allclose(aux.numpy(), x.numpy() * 2.0)


def test_a_users_tf_matmul_layer_gets_exact_per_example_norms():
    # tf.vectorized_map turns tf.matmul(x, w) on sequences into a batch-broadcast product that
    # oneDNN computes wrongly for part of the batch; the seam's converter avoids broadcasting.
    class SequenceDense(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 3))

        def call(self, inputs):
            return tf.matmul(inputs, self.w)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12, 2)), SequenceDense(), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(8, 12, 2)).astype("float32"))
    y = tf.constant(rng.normal(size=(8, 1)).astype("float32") * 10)
    mse = keras.losses.MeanSquaredError()

    def unit_loss(unit):
        predictions = model(unit["x"], training=True)
        return mse(unit["y"], predictions), predictions

    sums, _, _, _ = clipping.clipped_gradient_sum(
        unit_loss, {"x": x, "y": y}, model.trainable_weights, 1.0
    )
    want = [tf.zeros_like(w) for w in model.trainable_weights]
    for i in range(8):
        with tf.GradientTape() as tape:
            loss = mse(y[i : i + 1], model(x[i : i + 1], training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        norm = float(tf.linalg.global_norm(grads))
        assert norm > 1.0  # every example is clipped
        want = [s + g / norm for s, g in zip(want, grads, strict=True)]
    for got, expected in zip(sums, want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


def residual_model() -> keras.Model:
    # Per example, `x + inputs` adds two (1, 500, 1) tensors: keras.ops.add makes it
    # bias_add(x, squeeze(inputs), "NCHW"), a bias that differs between examples.
    inputs = keras.Input((500, 1))
    x = keras.layers.Dense(1, name="dense")(inputs)
    return keras.Model(inputs, x + inputs)


def test_a_residual_added_as_a_per_example_nchw_bias_gets_exact_per_example_gradients():
    keras.utils.set_random_seed(0)
    model = residual_model()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 500, 1)).astype("float32"))
    y = tf.constant(rng.normal(size=(4, 500, 1)).astype("float32"))
    mse = keras.losses.MeanSquaredError()

    def unit_loss(unit):
        predictions = model(unit["x"], training=True)
        return mse(unit["y"], predictions), predictions

    sums, _, predictions, _ = clipping.clipped_gradient_sum(
        unit_loss, {"x": x, "y": y}, model.trainable_weights, 0.5
    )
    np.testing.assert_allclose(predictions.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    want = [tf.zeros_like(w) for w in model.trainable_weights]
    for i in range(4):
        with tf.GradientTape() as tape:
            loss = mse(y[i : i + 1], model(x[i : i + 1], training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        factor = min(1.0, 0.5 / float(tf.linalg.global_norm(grads)))
        want = [s + g * factor for s, g in zip(want, grads, strict=True)]
    for got, expected in zip(sums, want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("bias_differs_per_example", [False, True])
@pytest.mark.parametrize("shape", [(1, 7, 1), (2, 5, 3), (2, 5, 3, 4), (2, 5, 3, 4, 2)])
def test_vectorized_bias_add_equals_a_loop(shape, bias_differs_per_example, data_format):
    rng = np.random.default_rng(1)
    values = tf.constant(rng.normal(size=(3, *shape)).astype("float32"))
    channels = shape[-1] if data_format == "NHWC" else shape[1]
    bias_shape = (3, channels) if bias_differs_per_example else (channels,)
    biases = tf.constant(rng.normal(size=bias_shape).astype("float32"))

    def one(i):
        bias = biases[i] if bias_differs_per_example else biases
        return tf.nn.bias_add(values[i], bias, data_format=data_format)

    vectorized = tf.function(lambda: tf.vectorized_map(one, tf.range(3)))()
    looped = tf.stack([one(i) for i in range(3)])
    assert vectorized.shape == looped.shape
    np.testing.assert_allclose(vectorized.numpy(), looped.numpy(), rtol=1e-6)


class WithUnusedLayer(keras.Model):
    """A subclassed model with a layer whose weights the loss never reaches."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.used = keras.layers.Dense(1)
        self.unused = keras.layers.Dense(2)

    def build(self, input_shape):
        self.used.build(input_shape)
        self.unused.build(input_shape)

    def call(self, inputs):
        return self.used(inputs)


def with_unused_output() -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(
        inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(2)(inputs)], name="two_heads"
    )


@pytest.mark.parametrize("make_model", [WithUnusedLayer, with_unused_output])
def test_a_variable_the_loss_does_not_reach_gets_zero_gradient_plus_noise(make_model):
    import pydp_r

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5

    def updates(targets_of):
        keras.utils.set_random_seed(0)
        model = make_model()
        model.build((None, 3))
        loss = "mse" if isinstance(model, WithUnusedLayer) else ["mse", None]
        optimizer = pydp_r.DPSGD(1.0, 0.8, learning_rate=1.0, noise_seed=7)
        model.compile(optimizer=optimizer, loss=loss)
        before = [w.numpy() for w in model.trainable_weights]
        model.fit(x, targets_of(model), batch_size=8, epochs=1, shuffle=False, verbose=0)
        after = [w.numpy() for w in model.trainable_weights]
        return [a - b for a, b in zip(after, before, strict=True)], model

    def predictions(model):
        output = model(x)
        return (output if isinstance(model, WithUnusedLayer) else output[0]).numpy()

    trained, model = updates(lambda model: y)
    noise_only, _ = updates(predictions)  # the loss is 0 there: every gradient is 0
    unused = [i for i, w in enumerate(model.trainable_weights) if w.shape[-1] == 2]
    assert len(unused) == 2
    for i in unused:
        np.testing.assert_array_equal(trained[i], noise_only[i])
        assert np.all(trained[i] != 0)  # noise reaches it: its presence is not revealed
    for i in set(range(len(trained))) - set(unused):
        assert not np.allclose(trained[i], noise_only[i])


def lstm_with_an_unused_output() -> keras.Model:
    # The sequence output and h are dropped (as lstm_seq2seq's encoder drops its output): the
    # while loop's output TensorList gets no gradient, and the tape fills it with zeros_like.
    inputs = keras.Input((5, 8))
    _, _, cell_state = keras.layers.LSTM(16, return_state=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(cell_state))


@pytest.mark.slow
@pytest.mark.parametrize("num_microbatches", [None, 2])
def test_an_rnn_with_an_unused_output_gets_exact_clipped_gradients(num_microbatches):
    keras.utils.set_random_seed(0)
    model = lstm_with_an_unused_output()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 5, 8)).astype("float32"))
    y = tf.constant(rng.normal(size=(4, 1)).astype("float32") * 10)
    mse = keras.losses.MeanSquaredError()

    def unit_loss(unit):
        predictions = model(unit["x"], training=True)
        return mse(unit["y"], predictions), predictions

    step = tf.function(
        lambda: clipping.clipped_gradient_sum(
            unit_loss, {"x": x, "y": y}, model.trainable_weights, 0.5, num_microbatches
        )
    )
    sums, losses, predictions, _ = step()
    np.testing.assert_allclose(predictions.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    units = 4 if num_microbatches is None else num_microbatches
    rows = 4 // units
    want = [tf.zeros_like(w) for w in model.trainable_weights]
    for i in range(units):
        rows_of_unit = slice(i * rows, (i + 1) * rows)
        with tf.GradientTape() as tape:
            loss = mse(y[rows_of_unit], model(x[rows_of_unit], training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        np.testing.assert_allclose(losses[i].numpy(), loss.numpy(), rtol=1e-5)
        factor = min(1.0, 0.5 / float(tf.linalg.global_norm(grads)))
        assert factor < 1.0  # every unit is clipped
        want = [s + g * factor for s, g in zip(want, grads, strict=True)]
    for got, expected in zip(sums, want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
