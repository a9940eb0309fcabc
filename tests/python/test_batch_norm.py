"""BatchNormalization is refused under DP training and replaced by per-example normalization."""

import keras
import numpy as np
import pytest

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
