"""The contract with Keras: with no noise and a clip that never binds, the DP step is Keras' step.

Each case trains two copies of one model from the same weights on the same batches, one with a
Keras optimizer and one with its DP version (noise 0, clip 1e6), and requires the same weights
and the same logs afterwards. A Keras release that changes its train step breaks one of these.
"""

import importlib.metadata
import os
import sys
import warnings

import keras
import numpy as np
import pytest

import pydp_r

N = 32


def regression_data(n=N, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1))).astype("float32")
    return x, y


def dense_model(regularized=False):
    regularizer = keras.regularizers.L2(0.01) if regularized else None
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(1, activity_regularizer=regularizer),
        ]
    )


def no_noise(optimizer_class, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        return optimizer_class(l2_norm_clip=1e6, noise_multiplier=0.0, **kwargs)


def twins(build, keras_optimizer, dp_optimizer, **compile_kwargs):
    """A Keras-optimizer model and a DP-optimizer copy of it with the same weights."""
    plain = build()
    private = build()
    private.set_weights(plain.get_weights())
    plain.compile(optimizer=keras_optimizer, **compile_kwargs)
    private.compile(optimizer=dp_optimizer, **compile_kwargs)
    return plain, private


def assert_same(plain_history, private_history, plain, private, rtol=2e-5):
    for a, b in zip(plain.get_weights(), private.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-6)
    for key, values in plain_history.history.items():
        np.testing.assert_allclose(private_history.history[key], values, rtol=rtol, atol=1e-6)


def fit_both(plain, private, *args, **kwargs):
    kwargs = {"verbose": 0, "shuffle": False, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.ShuffledBatchesWarning)
        return plain.fit(*args, **kwargs), private.fit(*args, **kwargs)


@pytest.mark.parametrize(
    "keras_class, dp_class, kwargs",
    [
        (keras.optimizers.SGD, pydp_r.DPSGD, {"learning_rate": 0.1}),
        (keras.optimizers.Adam, pydp_r.DPAdam, {"learning_rate": 0.01}),
        (keras.optimizers.SGD, pydp_r.DPSGD, {"learning_rate": 0.1, "loss_scale_factor": 8.0}),
        (keras.optimizers.Adam, pydp_r.DPAdam, {"learning_rate": 0.01, "use_ema": True}),
        (
            keras.optimizers.SGD,
            pydp_r.DPSGD,
            {"learning_rate": 0.1, "gradient_accumulation_steps": 2},
        ),
    ],
    ids=["sgd", "adam", "loss_scale_factor", "ema", "gradient_accumulation"],
)
def test_optimizer_options(keras_class, dp_class, kwargs):
    x, y = regression_data()
    plain, private = twins(
        dense_model,
        keras_class(**kwargs),
        no_noise(dp_class, **kwargs),
        loss="mse",
        metrics=["mae"],
    )
    histories = fit_both(plain, private, x, y, batch_size=8, epochs=2)
    assert_same(*histories, plain, private)


def test_loss_scale_factor_does_not_shrink_the_update():
    # The drift the seam issue found: DPSGD(loss_scale_factor=8) made updates 8x smaller.
    x, y = regression_data()
    plain, private = twins(
        dense_model,
        keras.optimizers.SGD(0.1),
        no_noise(pydp_r.DPSGD, learning_rate=0.1, loss_scale_factor=8.0),
        loss="mse",
    )
    before = private.get_weights()
    histories = fit_both(plain, private, x, y, batch_size=N, epochs=1)
    assert_same(*histories, plain, private)
    assert not np.allclose(before[0], private.get_weights()[0])


def test_sample_weight_class_weight_and_weighted_metrics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    weights = rng.uniform(0.2, 2.0, size=N).astype("float32")

    def classifier():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])

    compile_kwargs = {
        "loss": "binary_crossentropy",
        "metrics": ["accuracy"],
        "weighted_metrics": ["mae"],
    }
    plain, private = twins(
        classifier,
        keras.optimizers.SGD(0.5),
        no_noise(pydp_r.DPSGD, learning_rate=0.5),
        **compile_kwargs,
    )
    assert_same(
        *fit_both(plain, private, x, y, sample_weight=weights, batch_size=8), plain, private
    )
    plain, private = twins(
        classifier,
        keras.optimizers.SGD(0.5),
        no_noise(pydp_r.DPSGD, learning_rate=0.5),
        **compile_kwargs,
    )
    histories = fit_both(plain, private, x, y, class_weight={0: 0.5, 1: 2.0}, batch_size=8)
    assert_same(*histories, plain, private)


def test_regularizers():
    x, y = regression_data()
    plain, private = twins(
        lambda: dense_model(regularized=True),
        keras.optimizers.SGD(0.1),
        no_noise(pydp_r.DPSGD, learning_rate=0.1),
        loss="mse",
    )
    assert_same(*fit_both(plain, private, x, y, batch_size=8, epochs=2), plain, private)


def test_multi_input_multi_output_with_loss_weights():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(N, 3)).astype("float32")
    b = rng.normal(size=(N, 2)).astype("float32")
    targets = {"sum": a.sum(1, keepdims=True), "diff": (a[:, :1] - b[:, :1])}

    def two_headed():
        input_a, input_b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
        hidden = keras.layers.Dense(6, activation="relu")(
            keras.layers.Concatenate()([input_a, input_b])
        )
        outputs = {
            "sum": keras.layers.Dense(1, name="sum")(hidden),
            "diff": keras.layers.Dense(1, name="diff")(hidden),
        }
        return keras.Model({"a": input_a, "b": input_b}, outputs)

    plain, private = twins(
        two_headed,
        keras.optimizers.SGD(0.05),
        no_noise(pydp_r.DPSGD, learning_rate=0.05),
        loss={"sum": "mse", "diff": "mae"},
        loss_weights={"sum": 1.0, "diff": 0.3},
        metrics={"sum": ["mae"], "diff": ["mse"]},
    )
    histories = fit_both(plain, private, {"a": a, "b": b}, targets, batch_size=8, epochs=2)
    assert_same(*histories, plain, private)


@pytest.mark.parametrize(
    "compile_kwargs",
    [{"steps_per_execution": 2}, {"jit_compile": True}],
    ids=["steps_per_execution", "jit_compile"],
)
def test_compile_options(compile_kwargs):
    x, y = regression_data()
    plain, private = twins(
        dense_model,
        keras.optimizers.SGD(0.1),
        no_noise(pydp_r.DPSGD, learning_rate=0.1),
        loss="mse",
        metrics=["mae"],
        **compile_kwargs,
    )
    assert_same(*fit_both(plain, private, x, y, batch_size=8, epochs=2), plain, private)


def test_partial_last_batch_with_microbatches_matches_keras():
    # 30 examples in batches of 8: the last batch of 6 is padded to 8 for 8 microbatches of one.
    x, y = regression_data(n=30)
    plain, private = twins(
        dense_model,
        keras.optimizers.SGD(0.1),
        no_noise(pydp_r.DPSGD, learning_rate=0.1, num_microbatches=8),
        loss="mse",
    )
    assert_same(*fit_both(plain, private, x, y, batch_size=8, epochs=2), plain, private)


def test_mixed_float16_with_loss_scaling_is_refused_and_without_it_trains():
    x, y = regression_data()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = dense_model()
        model.compile(optimizer=no_noise(pydp_r.DPSGD, learning_rate=0.1), loss="mse")
        with pytest.raises(ValueError, match="mixed precision.*auto_scale_loss=False"):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        model = dense_model()
        model.compile(
            optimizer=pydp_r.DPSGD(1.0, 1.0, learning_rate=0.1), loss="mse", auto_scale_loss=False
        )
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dp_parameters_are_read_only_after_construction():
    optimizer = pydp_r.DPAdam(1.0, 1.1)
    for name in ("l2_norm_clip", "noise_multiplier", "num_microbatches"):
        with pytest.raises(AttributeError, match="fixed at construction"):
            setattr(optimizer, name, 1000)
    assert optimizer.noise_multiplier == 1.1


def test_keras_versions_below_the_floor_are_refused():
    from pydp_r import _keras_seam

    _keras_seam.check_keras_version("3.11.0")
    _keras_seam.check_keras_version("3.16.2")
    with pytest.raises(ImportError, match="Keras >= 3.11"):
        _keras_seam.check_keras_version("3.10.9")


def test_tensorflow_that_would_clip_wrongly_is_refused():
    from pydp_r import _keras_seam

    _keras_seam.check_tensorflow("2.21.0", onednn_enabled=True)
    _keras_seam.check_tensorflow("2.16.2", onednn_enabled=False)
    with pytest.raises(ImportError, match="TF_ENABLE_ONEDNN_OPTS=0"):
        _keras_seam.check_tensorflow("2.20.0", onednn_enabled=True)
    with pytest.raises(ImportError, match="TensorFlow >= 2.16"):
        _keras_seam.check_tensorflow("2.15.1", onednn_enabled=False)
    _keras_seam.check_tensorflow()  # the TensorFlow these tests run on passes


@pytest.mark.parametrize(
    ("installed", "user_value", "expected"),
    [("2.19.1", None, "0"), ("2.21.0", None, None), ("2.16.2", "1", "1")],
)
def test_importing_pydp_r_first_turns_onednn_off_on_old_tensorflow(
    monkeypatch, installed, user_value, expected
):
    monkeypatch.delitem(sys.modules, "tensorflow")  # as if TensorFlow were not loaded yet
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    if user_value is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", user_value)
    pydp_r._onednn_off_for_old_tensorflow()
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected


@pytest.mark.parametrize(("keras_version", "factor"), [("3.13.2", 4.0), ("3.14.0", 1.0)])
def test_activity_losses_are_counted_as_the_keras_release_counts_them(
    monkeypatch, keras_version, factor
):
    # Keras < 3.14 sums a layer's activity regularization over the batch, 3.14+ averages it:
    # on the older releases each unit's share is scaled by the number of units, so the DP step
    # with noise 0 and a loose clip stays Keras' step (test_regularizers, run on both ends).
    from pydp_r import _keras_seam

    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activity_regularizer=keras.regularizers.L2(1.0))]
    )
    x = np.ones((1, 3), "float32")
    model(x)
    plain = float(keras.ops.sum(model.losses))
    monkeypatch.setattr(keras, "__version__", keras_version)
    with _keras_seam.activity_losses_as_keras_sums(model, 4):
        model(x)
        scaled = float(keras.ops.sum(model.losses))
    model(x)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(plain)  # restored
    assert plain > 0
    assert scaled == pytest.approx(factor * plain)


def test_symbolic_calls_trace_keras_ops_with_an_unknown_or_a_given_batch_size():
    from pydp_r import _keras_seam

    class BroadcastWeight(keras.layers.Layer):
        """Adds its weight broadcast to the inputs' shape (needs the batch size as a value)."""

        def build(self, input_shape):
            self.weight = self.add_weight(shape=input_shape[1:], name="weight")

        def call(self, inputs):
            shape = keras.ops.shape(inputs)
            return keras.ops.tanh(inputs) + keras.ops.broadcast_to(self.weight, shape)

    inputs = keras.Input((3, 2))
    layer = BroadcastWeight()
    outputs = layer(inputs)
    with pytest.raises(ValueError):  # broadcast_to a shape holding None
        _keras_seam.symbolic_calls(layer, (outputs,), {})
    calls, traced = _keras_seam.symbolic_calls_with_inputs(layer, (outputs,), {}, [], 7)
    assert [type(call.operation).__name__ for call in calls] == ["InputLayer", "Tanh", "Add"]
    assert [tuple(output.shape) for output in traced] == [(7, 3, 2)]
    # The model's own graph is unchanged: the layer's one call.
    assert len(layer._inbound_nodes) == 1
