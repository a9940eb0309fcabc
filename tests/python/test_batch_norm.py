"""BatchNormalization is refused under DP training and replaced by per-example normalization."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import pydp_r
from pydp_r.batch_norm import check_no_batch_norm


def walkthrough_like_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 6)),
            keras.layers.Conv1D(32, 3, activation="relu", name="conv_a"),
            keras.layers.BatchNormalization(name="bn_a"),
            keras.layers.Conv1D(12, 5, activation="relu", name="conv_b"),
            keras.layers.BatchNormalization(name="bn_b"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1, name="head"),
        ]
    )


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 12, 6)).astype("float32"), rng.normal(size=(16, 1)).astype(
        "float32"
    )


def test_fit_refuses_batch_norm_and_names_the_layers():
    model = walkthrough_like_model()
    model.compile(optimizer=pydp_r.DPAdam(1.0, 1.0), loss="mse")
    with pytest.raises(ValueError, match="'bn_a', 'bn_b'.*replace_batch_norm"):
        model.fit(*data(), batch_size=8, verbose=0)


def test_frozen_batch_norm_runs_per_example_and_is_allowed():
    model = walkthrough_like_model()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    check_no_batch_norm(model)


def test_replacement_uses_group_norm_keeps_other_weights_and_trains_privately():
    model = walkthrough_like_model()
    fixed = pydp_r.replace_batch_norm(model)
    kinds = {layer.name: type(layer) for layer in fixed.layers}
    assert kinds["bn_a"] is keras.layers.GroupNormalization
    assert kinds["bn_b"] is keras.layers.GroupNormalization
    # 32 channels -> 32 groups; 12 channels -> 12 groups (largest divisor <= 32).
    assert fixed.get_layer("bn_a").groups == 32 and fixed.get_layer("bn_b").groups == 12
    for name in ("conv_a", "conv_b", "head"):
        for new, old in zip(
            fixed.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(new, old)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    fixed.compile(optimizer=pydp_r.DPAdam(1.0, 1.0), loss="mse")
    history = fixed.fit(*data(), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_layer_norm_replacement_and_group_bound():
    model = walkthrough_like_model()
    assert type(pydp_r.replace_batch_norm(model, "layer").get_layer("bn_a")) is (
        keras.layers.LayerNormalization
    )
    assert pydp_r.replace_batch_norm(model, max_groups=8).get_layer("bn_a").groups == 8
    assert pydp_r.replace_batch_norm(model, max_groups=5).get_layer("bn_b").groups == 4


def test_bad_arguments_and_subclassed_models_are_refused():
    model = walkthrough_like_model()
    with pytest.raises(ValueError, match="replacement"):
        pydp_r.replace_batch_norm(model, "instance")
    with pytest.raises(ValueError, match="max_groups"):
        pydp_r.replace_batch_norm(model, max_groups=0)

    class Custom(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(ValueError, match="Sequential and functional"):
        pydp_r.replace_batch_norm(Custom())


def functional_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 6))
    x = keras.layers.Conv1D(32, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x), name="functional")


def sequential_in_functional() -> keras.Model:
    inner = walkthrough_like_model()
    inputs = keras.Input((12, 6))
    return keras.Model(inputs, inner(inputs), name="outer")


def functional_in_sequential() -> keras.Model:
    return keras.Sequential([keras.Input((12, 6)), functional_model()], name="outer")


def functional_in_functional() -> keras.Model:
    inner = functional_model()
    inputs = keras.Input((12, 6))
    x = keras.layers.BatchNormalization(name="bn_outer")(inputs)
    return keras.Model(inputs, inner(x), name="outer")


def assert_no_batch_norm_left_and_weights_kept(model, fixed):
    left = [
        layer.name
        for layer in fixed._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert left == []
    for name in ("conv_a", "head"):
        old = [layer for layer in model._flatten_layers() if layer.name == name]
        new = [layer for layer in fixed._flatten_layers() if layer.name == name]
        assert len(old) == len(new) >= 1
        for old_layer, new_layer in zip(old, new, strict=True):
            for got, want in zip(new_layer.get_weights(), old_layer.get_weights(), strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "make_model",
    [
        functional_model,
        sequential_in_functional,
        functional_in_sequential,
        functional_in_functional,
    ],
)
def test_functional_and_nested_models_are_replaced_and_train_privately(make_model):
    model = make_model()
    fixed = pydp_r.replace_batch_norm(model)
    assert_no_batch_norm_left_and_weights_kept(model, fixed)
    x, y = data()
    # The replacements start at identity-like scale and offset: only normalization changed.
    assert fixed(x).shape == model(x).shape
    fixed.compile(optimizer=pydp_r.DPSGD(1.0, 1.0, learning_rate=0.1), loss="mse")
    history = fixed.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_masked_input_reaches_the_replacement_of_a_functional_batch_norm():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.LSTM(3, name="lstm")(x)
    model = keras.Model(inputs, x)
    fixed = pydp_r.replace_batch_norm(model, "layer")
    assert isinstance(fixed.get_layer("bn"), keras.layers.LayerNormalization)
    tokens = np.array([[1, 2, 3, 0, 0]])
    # LayerNormalization is per step: the LSTM, still masked, ignores the padded steps.
    np.testing.assert_allclose(
        fixed(tokens).numpy(), fixed(tokens[:, :3]).numpy(), rtol=1e-5, atol=1e-6
    )


def test_frozen_batch_norm_uses_its_moving_statistics_when_training_in_keras():
    # Why a frozen layer is allowed: Keras 3 normalizes with the moving statistics whenever
    # trainable=False, even with training=True, and does not update them; each example's
    # output then depends on that example alone.
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    layer.moving_mean.assign([1.0, 2.0, 3.0])
    layer.moving_variance.assign([4.0, 4.0, 4.0])
    layer.trainable = False
    batch = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    alone = layer(batch[:1], training=True).numpy()
    together = layer(batch, training=True).numpy()[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-6)
    np.testing.assert_allclose(alone, (batch[:1] - [1, 2, 3]) / np.sqrt(4 + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), [1.0, 2.0, 3.0])


def test_frozen_batch_norm_is_kept_with_its_statistics_and_trains_privately():
    model = functional_in_functional()
    model.get_layer("bn_outer").trainable = False
    model.get_layer("bn_outer").moving_mean.assign(np.full(6, 0.5, "float32"))
    fixed = pydp_r.replace_batch_norm(model)
    kept = fixed.get_layer("bn_outer")
    assert isinstance(kept, keras.layers.BatchNormalization) and not kept.trainable
    np.testing.assert_array_equal(kept.moving_mean.numpy(), np.full(6, 0.5))
    inner = fixed.get_layer("functional")
    assert isinstance(inner.get_layer("bn_a"), keras.layers.GroupNormalization)
    fixed.compile(optimizer=pydp_r.DPSGD(1.0, 1.0, learning_rate=0.1), loss="mse")
    fixed.fit(*data(), batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(kept.moving_mean.numpy(), np.full(6, 0.5))


def test_batch_norm_inside_a_nested_subclassed_model_is_refused_by_name():
    @keras.saving.register_keras_serializable(package="test_batch_norm")
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(4)
            self.norm = keras.layers.BatchNormalization(name="bn_hidden")

        def call(self, inputs):
            return self.norm(self.dense(inputs))

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Block(name="block")(inputs))
    with pytest.raises(ValueError, match="'bn_hidden'.*subclassed"):
        pydp_r.replace_batch_norm(model)


def _distance(vectors):
    # A named function, not registered with Keras (as in Keras' siamese example).
    first, second = vectors
    return keras.ops.sqrt(keras.ops.sum(keras.ops.square(first - second), axis=1, keepdims=True))


def siamese_like_model() -> keras.Model:
    """Keras' siamese example's shape: batch norm on feature vectors, a Lambda with a named
    function, and batch norm of the one-value distance before the head."""
    keras.utils.set_random_seed(0)
    first, second = keras.Input((6,)), keras.Input((6,))
    tower = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.BatchNormalization(name="bn_vectors"),
        ],
        name="tower",
    )
    distance = keras.layers.Lambda(_distance, output_shape=(1,))([tower(first), tower(second)])
    scaled = keras.layers.BatchNormalization(name="bn_distance")(distance)
    return keras.Model([first, second], keras.layers.Dense(1, name="head")(scaled))


def test_feature_vectors_get_one_group_and_a_single_feature_is_kept_frozen():
    # A group per feature would normalize every feature to its offset: a constant model.
    model = siamese_like_model()
    bn_distance = model.get_layer("bn_distance")
    bn_distance.moving_mean.assign([0.5])
    fixed = pydp_r.replace_batch_norm(model)
    check_no_batch_norm(fixed)
    vectors = fixed.get_layer("tower").get_layer("bn_vectors")
    assert type(vectors) is keras.layers.GroupNormalization and vectors.groups == 1
    frozen = fixed.get_layer("bn_distance")
    assert type(frozen) is keras.layers.BatchNormalization and not frozen.trainable
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), [0.5])
    rng = np.random.default_rng(9)
    pair = [rng.normal(size=(8, 6)).astype("float32") for _ in range(2)]
    assert np.ptp(fixed.predict(pair, verbose=0)) > 1e-3  # not a constant model


def test_the_replaced_siamese_model_trains_with_the_per_example_loop_step():
    rng = np.random.default_rng(10)
    pair = [rng.normal(size=(8, 6)).astype("float32") for _ in range(2)]
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    fixed = pydp_r.replace_batch_norm(siamese_like_model())
    reference = []
    for i in range(8):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(fixed([p[i : i + 1] for p in pair]) - y[i : i + 1]))
        grads = tape.gradient(loss, fixed.trainable_weights)
        norm = np.sqrt(sum(float(np.sum(g.numpy() ** 2)) for g in grads))
        reference.append([g.numpy() * min(1.0, 0.5 / norm) / 8 for g in grads])
    expected = [sum(parts) for parts in zip(*reference, strict=True)]
    before = [w.numpy().copy() for w in fixed.trainable_weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        fixed.compile(optimizer=pydp_r.DPSGD(0.5, 0.0, learning_rate=1.0), loss="mse")
    fixed.fit(pair, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for w, old, want in zip(fixed.trainable_weights, before, expected, strict=True):
        np.testing.assert_allclose(w.numpy() - old, -want, rtol=2e-4, atol=1e-6)
