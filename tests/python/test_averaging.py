"""ParameterAveraging: the model ends with the EMA of the iterates, validation sees the EMA,
and training itself is left unchanged."""

import keras
import numpy as np
import pytest

import pydp_r
from pydp_r.averaging import ParameterAveraging


class RecordIterates(keras.callbacks.Callback):
    """Trainable weights after every batch (placed before ParameterAveraging, so raw)."""

    def __init__(self):
        super().__init__()
        self.iterates = []

    def on_train_batch_end(self, batch, logs=None):
        self.iterates.append([np.array(v) for v in self.model.get_weights()])


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 3).astype("float32")
    return x, y


def fit(optimizer, callbacks, epochs=3, validation=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    x, y = data()
    history = model.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
        callbacks=callbacks, validation_data=validation,
    )  # fmt: skip
    return model, history


def expected_average(initial, iterates, decay, warmup):
    """The EMA from the initial weights over the iterates, step t = 1, 2, ..."""
    average = [w.copy() for w in initial]
    for step, weights in enumerate(iterates, start=1):
        d = min(decay, (1 + step) / (warmup + step))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_model_ends_with_the_ema_of_the_iterates():
    recorder, averaging = RecordIterates(), ParameterAveraging(decay=0.9, warmup=10)
    model, _ = fit(keras.optimizers.SGD(0.1), [recorder, averaging])
    assert averaging.steps == len(recorder.iterates) == 12
    keras.utils.set_random_seed(1)
    initial = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).get_weights()
    expected = expected_average(initial, recorder.iterates, 0.9, 10)
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for raw, last in zip(averaging.raw_weights, recorder.iterates[-1], strict=True):
        np.testing.assert_array_equal(raw, last)
    assert not np.allclose(model.get_weights()[0], recorder.iterates[-1][0])


def test_validation_uses_the_average_and_training_is_unchanged():
    validation = data(32, seed=5)
    plain_recorder = RecordIterates()
    fit(keras.optimizers.SGD(0.1), [plain_recorder], validation=validation)
    recorder, averaging = RecordIterates(), ParameterAveraging(decay=0.9)
    model, history = fit(keras.optimizers.SGD(0.1), [recorder, averaging], validation=validation)
    for with_averaging, without in zip(recorder.iterates, plain_recorder.iterates, strict=True):
        for a, b in zip(with_averaging, without, strict=True):
            np.testing.assert_array_equal(a, b)
    # After the last epoch the model holds the average; its validation loss is the logged one.
    final_loss = model.evaluate(*validation, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(final_loss, rel=1e-5)
    model.set_weights(averaging.raw_weights)
    assert model.evaluate(*validation, verbose=0) != pytest.approx(final_loss, rel=1e-3)


def test_works_with_the_dp_step():
    recorder, averaging = RecordIterates(), ParameterAveraging(decay=0.9)
    optimizer = pydp_r.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.1)
    model, _ = fit(optimizer, [recorder, averaging], epochs=2)
    keras.utils.set_random_seed(1)
    initial = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).get_weights()
    expected = expected_average(initial, recorder.iterates, 0.9, 10)
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(decay=1.0), "decay must be a number in [0, 1); received 1.0"),
        (dict(decay=-0.1), "decay must be a number in [0, 1); received -0.1"),
        (dict(warmup=0), "warmup must be a positive integer; received 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError) as error:
        ParameterAveraging(**kwargs)
    assert message in str(error.value)
