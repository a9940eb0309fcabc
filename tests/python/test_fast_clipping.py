"""The fast path's per-example norms and clipped sums equal the general per-example computation,
per layer type."""

import warnings
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_grad_norms import (
    BATCH,
    VARIANTS,
    _targets,
    assert_rule_matches_general_path,
    case_inputs,
)

import pydp_r
from pydp_r.step import clipping, fast_clipping


def both_paths(model, x, y, clip, num_microbatches=None, sample_weight=None):
    """Clipped sums, unit losses, predictions and per-unit squared gradient norms from the fast
    and the general path."""
    model.compile(loss="mse")
    targets = {"y": tf.constant(y)}
    if sample_weight is not None:
        targets["sample_weight"] = tf.constant(sample_weight)

    def loss_from_predictions(unit_targets, predictions):
        return model._compute_loss(
            y=unit_targets["y"],
            y_pred=predictions,
            sample_weight=unit_targets.get("sample_weight"),
        )

    def unit_loss(unit):
        predictions = model(unit["x"], training=True)
        return loss_from_predictions(unit, predictions), predictions

    norms = {}
    original_clip_factors = clipping.clip_factors

    def spy(module, name):
        def clip_factors(squared_norms, l2_norm_clip):
            norms[name] = squared_norms.numpy()
            return original_clip_factors(squared_norms, l2_norm_clip)

        return mock.patch.object(module, "clip_factors", clip_factors)

    x = tf.nest.map_structure(tf.constant, x)  # a tuple for a model of several inputs
    with spy(fast_clipping, "fast"):
        fast = fast_clipping.clipped_gradient_sum(
            model, loss_from_predictions, x, targets, clip, num_microbatches
        )
    with spy(clipping, "general"):
        general = clipping.clipped_gradient_sum(
            unit_loss,
            {"x": x, **targets},
            model.trainable_weights,
            clip,
            num_microbatches,
        )
    return (*fast, norms["fast"]), (*general, norms["general"])


def assert_same_clipped_sums(model, x, y, clip=1.0, **kwargs):
    assert fast_clipping.unsupported_reason(model) is None
    fast, general = both_paths(model, x, y, clip, **kwargs)
    # Per-unit norms: the general path forms each unit's gradient and takes its norm.
    np.testing.assert_allclose(fast[-1], general[-1], rtol=1e-4, atol=1e-6)
    # The bound must bind for some units, or the test would not test clipping.
    assert np.any(general[-1] > clip**2)
    for variable, got, want in zip(model.trainable_weights, fast[0], general[0], strict=True):
        scale = max(1.0, float(np.abs(want.numpy()).max()))
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), atol=2e-5 * scale, err_msg=variable.path
        )
    np.testing.assert_allclose(fast[1].numpy(), general[1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(fast[2].numpy(), general[2].numpy(), rtol=1e-5, atol=1e-6)


def sequence_data(batch=8, steps=12, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = (rng.normal(size=(batch, 1)) * np.linspace(0.1, 20, batch)[:, None]).astype("float32")
    return x, y


def sequential(*layers, input_shape):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(input_shape), *layers])


@pytest.mark.parametrize("num_microbatches", [None, 2])
def test_dense_on_vectors(num_microbatches):
    x, y = sequence_data()
    model = sequential(
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(1, use_bias=False),
        input_shape=(12, 6),
    )
    assert_same_clipped_sums(model, x, y, num_microbatches=num_microbatches)


@pytest.mark.parametrize("units", [3, 64])  # ghost norm (T(d_in+d_out) < d_in d_out) and not
def test_dense_on_sequences(units):
    x, y = sequence_data(features=40 if units == 64 else 2)
    model = sequential(
        keras.layers.Dense(units, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
        input_shape=x.shape[1:],
    )
    assert_same_clipped_sums(model, x, y, clip=0.5)


@pytest.mark.parametrize(
    "conv_kwargs",
    [
        {"padding": "valid"},
        {"padding": "same", "strides": 2},
        {"padding": "causal", "dilation_rate": 2},
        {"padding": "valid", "strides": 3, "use_bias": False},
    ],
)
def test_conv1d(conv_kwargs):
    x, y = sequence_data()
    model = sequential(
        keras.layers.Conv1D(5, 3, activation="relu", **conv_kwargs),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(1),
        input_shape=(12, 6),
    )
    assert_same_clipped_sums(model, x, y)


def formed_gradients(monkeypatch):
    """Spy recording, per outer-product layer call, whether per-unit gradients were formed."""
    from pydp_r.grad_norms import registry

    formed = []
    original = registry.outer_product_gradients

    def spy(activations, z_grads):
        norms, gradients = original(activations, z_grads)
        formed.append(gradients is not None)
        return norms, gradients

    monkeypatch.setattr(registry, "outer_product_gradients", spy)
    return formed


def test_conv1d_with_ghost_norms_and_formed_gradients(monkeypatch):
    # First conv: 2 positions, patches of 3 * 64 and 256 filters: ghost norms are cheaper even
    # counting the unfolding; second conv: 1 position x 2 filters: forming the gradients is.
    from pydp_r.grad_norms import conv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 64)).astype("float32")
    y = (rng.normal(size=(8, 1)) * np.linspace(0.1, 20, 8)[:, None]).astype("float32")
    model = sequential(
        keras.layers.Conv1D(256, 3, activation="relu"),
        keras.layers.Conv1D(2, 2),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
        input_shape=(4, 64),
    )
    chosen = []
    original = conv.ghost_is_cheaper

    def spy(*args):
        chosen.append(original(*args))
        return chosen[-1]

    monkeypatch.setattr(conv, "ghost_is_cheaper", spy)
    assert_same_clipped_sums(model, x, y, clip=0.5)
    assert chosen == [True, False]


@pytest.mark.parametrize(
    ("positions", "kernel_positions", "in_channels", "out_channels", "ghost"),
    [
        (2, 3, 64, 256, True),
        (1024, 9, 32, 32, False),
        (196, 64, 1, 16, False),
        (None, 9, 8, 8, False),
    ],
)
def test_conv_cost_model(positions, kernel_positions, in_channels, out_channels, ghost):
    from pydp_r.grad_norms import conv

    assert conv.ghost_is_cheaper(positions, kernel_positions, in_channels, out_channels) == ghost


def test_ghost_norms_are_chosen_when_the_batch_size_is_unknown_at_trace_time(monkeypatch):
    # Keras traces fit() with an unknown batch size for datasets without drop_remainder.
    x, y = sequence_data(features=40)  # 12 positions x (40 + 64) < 40 x 64: ghost is cheaper
    model = sequential(
        keras.layers.Dense(64, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
        input_shape=x.shape[1:],
    )
    model.compile(loss="mse")

    def loss(unit_targets, predictions):
        return model._compute_loss(y=unit_targets, y_pred=predictions)

    formed = formed_gradients(monkeypatch)
    unknown_batch = [tf.TensorSpec((None, *x.shape[1:])), tf.TensorSpec((None, 1))]
    traced = tf.function(
        lambda x, y: fast_clipping.clipped_gradient_sum(model, loss, x, y, 0.5)[0],
        input_signature=unknown_batch,
    )
    got = traced(tf.constant(x), tf.constant(y))
    assert formed == [False, False]
    want = fast_clipping.clipped_gradient_sum(model, loss, tf.constant(x), tf.constant(y), 0.5)
    for got_sum, want_sum in zip(got, want[0], strict=True):
        np.testing.assert_allclose(got_sum.numpy(), want_sum.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("positions", "d_in", "d_out", "formed"),
    [(1, 5, 3, False), (12, 2, 3, True), (4, 40, 64, False), (7, 9, 9, True)],
)
@pytest.mark.parametrize("positions_last", [False, True])
def test_outer_product_norms_equal_the_formed_per_unit_gradients(
    positions, d_in, d_out, formed, positions_last
):
    from pydp_r.grad_norms import registry

    rng = np.random.default_rng(positions)
    activations = tf.constant(rng.normal(size=(5, positions, d_in)), tf.float32)
    z_grads = tf.constant(rng.normal(size=(5, positions, d_out)), tf.float32)
    want = np.einsum("utd,utf->udf", activations.numpy(), z_grads.numpy())
    given = tf.transpose(activations, [0, 2, 1]) if positions_last else activations
    norms, gradients = registry.outer_product_gradients(given, z_grads, positions_last)
    np.testing.assert_allclose(norms.numpy(), np.sum(want**2, axis=(1, 2)), rtol=1e-5)
    assert (gradients is not None) == formed
    if formed:
        np.testing.assert_allclose(gradients.numpy(), want, rtol=1e-5, atol=1e-5)


def test_a_convolution_over_sequences_of_unknown_length_gets_the_same_clipped_sum():
    # Traced with the length unknown, the patches come from tf.image.extract_patches; with it
    # known, from the shifted views: both must give the per-example clipped sum.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 11, 3)).astype("float32")
    y = (rng.normal(size=(6, 1)) * np.linspace(0.1, 20, 6)[:, None]).astype("float32")
    inputs = keras.Input((None, 3))
    hidden = keras.layers.Conv1D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(loss="mse")

    def loss(unit_targets, predictions):
        return model._compute_loss(y=unit_targets, y_pred=predictions)

    traced = tf.function(
        lambda x, y: fast_clipping.clipped_gradient_sum(model, loss, x, y, 0.5)[0],
        input_signature=[tf.TensorSpec((None, None, 3)), tf.TensorSpec((None, 1))],
    )
    got = traced(tf.constant(x), tf.constant(y))
    static = tf.function(
        lambda x, y: fast_clipping.clipped_gradient_sum(model, loss, x, y, 0.5)[0]
    )(tf.constant(x), tf.constant(y))
    want, *_ = clipping.clipped_gradient_sum(
        lambda unit: (loss(unit["y"], predictions := model(unit["x"], training=True)), predictions),
        {"x": tf.constant(x), "y": tf.constant(y)},
        model.trainable_weights,
        0.5,
    )
    for got_sum, static_sum, want_sum in zip(got, static, want, strict=True):
        np.testing.assert_allclose(got_sum.numpy(), want_sum.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(static_sum.numpy(), want_sum.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "conv_kwargs",
    [
        {"padding": "same", "strides": 2},
        {"padding": "valid", "strides": (1, 2)},
        {"padding": "same", "dilation_rate": 2},
    ],
)
def test_conv2d(conv_kwargs):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 9, 10, 3)).astype("float32")
    y = rng.normal(size=(6, 1)).astype("float32") * 4
    model = sequential(
        keras.layers.Conv2D(4, (3, 2), activation="relu", **conv_kwargs),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
        input_shape=(9, 10, 3),
    )
    assert_same_clipped_sums(model, x, y, num_microbatches=None)


def test_embedding_with_repeated_indices():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 7, size=(8, 10)).astype("int32")  # 10 lookups in 7 rows repeat rows
    y = rng.normal(size=(8, 1)).astype("float32") * 3
    model = sequential(
        keras.layers.Embedding(7, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
        input_shape=(10,),
    )
    assert_same_clipped_sums(model, x, y, clip=0.3)


@pytest.mark.parametrize("num_microbatches", [None, 4])
def test_layer_normalization_and_unregistered_layers_mixed(num_microbatches):
    x, y = sequence_data()
    model = sequential(
        keras.layers.Conv1D(8, 3, activation="relu"),
        keras.layers.LayerNormalization(),
        keras.layers.Conv1D(6, 3),
        keras.layers.GroupNormalization(2),
        keras.layers.PReLU(),  # no rule either
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
        input_shape=(12, 6),
    )
    assert grad_rules(model) == {"Conv1D", "LayerNormalization", "GroupNormalization", "Dense"}
    assert_same_clipped_sums(model, x, y, num_microbatches=num_microbatches)


def grad_rules(model):
    from pydp_r import grad_norms

    return {
        type(layer).__name__
        for layer in model.layers
        if layer.trainable_weights and grad_norms.rule_for(layer) is not None
    }


def test_functional_model_with_two_inputs_and_sample_weights():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(8, 5, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    input_a = keras.Input((5, 3))
    branch = keras.layers.Conv1D(4, 2, activation="relu")(input_a)
    pooled = keras.layers.GlobalAveragePooling1D()(branch)
    skip = keras.layers.Dense(4)(keras.layers.Flatten()(input_a))
    model = keras.Model(input_a, keras.layers.Dense(1)(keras.layers.Add()([pooled, skip])))
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    weights = np.linspace(0, 2, 8).astype("float32")
    assert_same_clipped_sums(model, a, y, sample_weight=weights)


def test_models_the_fast_path_cannot_prove_per_example_are_sent_to_the_general_path():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    # A subclassed model's call is traced from example inputs; without them it is not proven.
    assert "traced from example inputs" in fast_clipping.unsupported_reason(Subclassed())
    # A TensorFlow op cannot be traced on symbolic tensors: nothing proves it per-example.
    lambda_model = sequential(keras.layers.Lambda(lambda t: tf.reverse(t, [0])), input_shape=(3,))
    assert "Lambda" in fast_clipping.unsupported_reason(lambda_model)
    # A keras.ops call between layers can mix examples (here: subtract the batch mean).
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4)(inputs)
    hidden = hidden - keras.ops.mean(hidden, axis=0, keepdims=True)
    ops_model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    assert "Mean" in fast_clipping.unsupported_reason(ops_model)
    nested = keras.Sequential([keras.Input((3,)), ops_model])
    assert "Mean" in fast_clipping.unsupported_reason(nested)
    # An einsum equation may give each example its own weights (batch in the kernel).
    keras.utils.set_random_seed(0)
    einsum_model = keras.Sequential(
        [keras.Input((3,), batch_size=4), keras.layers.EinsumDense("ab,abc->ac", (2,))]
    )
    assert "EinsumDense" in fast_clipping.unsupported_reason(einsum_model)


def assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip, jit_compile="auto"):
    """One noiseless DPSGD fit() step (lr 1) equals minus the mean of the clipped gradients of
    each example's loss, MSE plus regularization, computed on that example alone."""
    reference = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x[i : i + 1]) - y[i : i + 1]))
            if model.losses:
                loss += tf.add_n(model.losses)
        # Embedding gradients come as IndexedSlices.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_weights)]
        norm = np.sqrt(sum(float(np.sum(g.numpy() ** 2)) for g in grads))
        reference.append([g.numpy() * min(1.0, clip / norm) / len(x) for g in grads])
    expected = [sum(parts) for parts in zip(*reference, strict=True)]
    before = [w.numpy().copy() for w in model.trainable_weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        model.compile(
            optimizer=pydp_r.DPSGD(clip, 0.0, learning_rate=1.0),
            loss="mse",
            jit_compile=jit_compile,
        )
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for w, old, want in zip(model.trainable_weights, before, expected, strict=True):
        np.testing.assert_allclose(w.numpy() - old, -want, rtol=2e-4, atol=1e-6)


def test_regularizers_fall_back_and_still_match_the_reference():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, activation="tanh")
    outputs = keras.layers.Dense(1, kernel_regularizer="l2")(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    assert "regularization" in fast_clipping.unsupported_reason(model)
    with pytest.raises(fast_clipping.NotSupported):
        both_paths(model, x, y, 1.0)

    # fit() falls back to the general path: its noiseless update is the per-example reference.
    assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip=1.0)


def test_fit_takes_the_fast_path_for_a_supported_model(monkeypatch):
    calls = []
    original = fast_clipping.clipped_gradient_sum

    def spy(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(fast_clipping, "clipped_gradient_sum", spy)
    x, y = sequence_data(16)
    model = sequential(
        keras.layers.Conv1D(4, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
        input_shape=(12, 6),
    )
    model.compile(optimizer=pydp_r.DPAdam(1.0, 1.0), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert calls and set(calls) == {model.name}  # traced once or more, always fast


def test_a_batch_mixing_functional_model_is_trained_example_by_example():
    # h - mean_batch(h) would let every example reach every gradient on the fast path; the
    # general path computes each example's gradient on that example alone.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 4
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    hidden = hidden - keras.ops.mean(hidden, axis=0, keepdims=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip=0.5)


@pytest.mark.parametrize("path", ["fast", "general"])
def test_xla_compiled_fit_step_is_the_batch_of_one_reference(path):
    # Keras compiles the train step with XLA on GPUs by default; both paths must compile.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 9, 10, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    model = sequential(
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
        input_shape=(9, 10, 3),
    )
    if path == "general":  # a layer without a per-example guarantee
        model = sequential(
            model, keras.layers.Lambda(lambda t: tf.identity(t)), input_shape=(9, 10, 3)
        )
    assert (fast_clipping.unsupported_reason(model) is None) == (path == "fast")
    assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip=0.5, jit_compile=True)


class _TokenAndPositionEmbedding(keras.layers.Layer):
    """Keras' text-classification example's layer, as users write it."""

    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = keras.ops.shape(x)[-1]
        positions = keras.ops.arange(start=0, stop=maxlen, step=1)
        positions = self.pos_emb(positions)
        x = self.token_emb(x)
        return x + positions


def test_a_position_embedding_tiled_over_the_batch_gives_the_per_example_loop_step(monkeypatch):
    # The position embedding is called on arange(8), without the batch axis, at batch size 8:
    # its input is tiled over the batch and the fit step is the per-example loop's (issue #27).
    tiled = []
    original = fast_clipping._tiled_over_batch

    def spy(tensor, batch_size):
        tiled.append(tuple(tensor.shape))
        return original(tensor, batch_size)

    monkeypatch.setattr(fast_clipping, "_tiled_over_batch", spy)
    rng = np.random.default_rng(6)
    x = rng.integers(0, 20, size=(8, 8)).astype("int32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int32")
    hidden = _TokenAndPositionEmbedding(8, 20, 4)(inputs)
    hidden = keras.layers.Dense(3, activation="tanh")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    assert fast_clipping.unsupported_reason(model) is None
    assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip=0.5)
    assert tiled and set(tiled) == {(8,)}  # traced once or more, always tiled


def test_preprocessing_layers_in_the_model_take_the_fast_path_and_the_loop_step():
    # Keras' structured-data example preprocesses inside the model (lookups, normalization,
    # bins): fixed state applied row by row, so the fast path proves the model per-example.
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.integers(0, 4, size=(8, 1)), rng.normal(50, 10, size=(8, 2))], axis=1
    ).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    category = keras.ops.cast(inputs[:, :1], "int64")
    encoded = [
        keras.layers.IntegerLookup(vocabulary=[0, 1, 2], output_mode="one_hot")(category),
        keras.layers.CategoryEncoding(4, output_mode="multi_hot")(category),
        keras.layers.Hashing(5, output_mode="one_hot")(category),
        keras.layers.Normalization(mean=50.0, variance=100.0)(inputs[:, 1:]),
        keras.layers.CategoryEncoding(4, output_mode="one_hot")(
            keras.layers.Discretization(bin_boundaries=[40.0, 50.0, 60.0])(inputs[:, 1:2])
        ),
    ]
    hidden = keras.layers.Dense(4, activation="tanh")(keras.layers.concatenate(encoded))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    assert fast_clipping.unsupported_reason(model) is None, str(pydp_r.clipping_report(model))
    assert_fit_step_is_the_batch_of_one_reference(model, x, y, clip=0.5)


def test_a_string_lookup_takes_the_fast_path_with_the_general_paths_clipped_sums():
    words = np.array([["normal"], ["fixed"], ["reversible"], ["fixed"]] * 2)
    y = np.random.default_rng(8).normal(size=(8, 1)).astype("float32") * 5
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1,), dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["normal", "fixed"], output_mode="one_hot")
    model = keras.Model(inputs, keras.layers.Dense(1)(lookup(inputs)))
    assert_same_clipped_sums(model, words, y, clip=0.5)


# --- Shared layers (issue #27): a layer called more than once adds its calls' gradients per
# example before the norm. Inputs of shape (batch, 2, ...) hold the two operands of each call.


def _shared_model(input_shape, shared, head=(), dtype="float32"):
    """Input (batch, 2, *shape) -> `shared` on each half -> concatenate -> head -> Dense(1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape, dtype=dtype)
    halves = [shared(inputs[:, i]) for i in range(2)]
    flat = [keras.layers.Flatten()(half) for half in halves]
    hidden = keras.layers.Concatenate()(flat)
    for layer in head:
        hidden = layer(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _chained_model(input_shape, shared):
    """`shared(shared(x))`: the second call's input depends on the layer's own weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Flatten()(shared(shared(inputs)))
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _different_lengths_model():
    """A Dense over 3 and over 5 positions of the same sequence (calls of different shapes)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 6))
    shared = keras.layers.Dense(5, activation="tanh")
    pooled = [
        keras.layers.GlobalAveragePooling1D()(shared(part))
        for part in (inputs[:, :3], inputs[:, 3:])
    ]
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(pooled)))


def _tower(input_shape):
    """A small convolutional embedding network, the Siamese tower's kind."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(3, 3, activation="tanh"),
            keras.layers.AveragePooling2D(2),
            keras.layers.Flatten(),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(4, activation="tanh"),
        ]
    )


def _shared_cases():
    """name -> (model builder, input shape, vocabulary for integer inputs or None)."""
    L = keras.layers
    return {
        # Dense on vectors: the two calls become two positions.
        "dense": (lambda: _shared_model((2, 6), L.Dense(5, activation="tanh")), (2, 6), None),
        # Dense over sequences, by ghost norms (T (d_in + d_out) < d_in d_out) and formed.
        "dense_ghost": (
            lambda: _shared_model((2, 3, 24), L.Dense(16, activation="tanh")),
            (2, 3, 24),
            None,
        ),
        "dense_formed": (
            lambda: _shared_model((2, 6, 3), L.Dense(2, activation="tanh")),
            (2, 6, 3),
            None,
        ),
        "dense_different_lengths": (_different_lengths_model, (8, 6), None),
        # Ghost norms, then a backward step from each call alone (calls feed each other).
        "dense_chained": (
            lambda: _chained_model((6,), L.Dense(6, activation="tanh")),
            (6,),
            None,
        ),
        # A small vocabulary: both calls look up some rows, whose gradients add before the norm.
        "embedding": (
            lambda: _shared_model((2, 5), L.Embedding(6, 3), dtype="int32"),
            (2, 5),
            6,
        ),
        "conv2d": (
            lambda: _shared_model((2, 6, 5, 2), L.Conv2D(3, 3, activation="tanh")),
            (2, 6, 5, 2),
            None,
        ),
        "conv2d_chained": (
            lambda: _chained_model((6, 5, 2), L.Conv2D(2, 3, padding="same", activation="tanh")),
            (6, 5, 2),
            None,
        ),
        "layer_norm": (lambda: _shared_model((2, 4, 5), L.LayerNormalization()), (2, 4, 5), None),
        "time_distributed": (
            lambda: _shared_model((2, 4, 3), L.TimeDistributed(L.Dense(5, activation="tanh"))),
            (2, 4, 3),
            None,
        ),
        "lstm": (lambda: _shared_model((2, 5, 3), L.LSTM(4)), (2, 5, 3), None),
        # Short and wide: the LSTM rule's ghost norms, the recurrent kernel's share of the
        # clipped sum through its backward pass.
        "lstm_ghost": (lambda: _shared_model((2, 3, 6), L.LSTM(8)), (2, 3, 6), None),
        # Without a rule: vectorized alone per call, the calls' gradients added.
        "prelu": (lambda: _shared_model((2, 5), L.PReLU(), head=[L.Dense(4)]), (2, 5), None),
        # Through its sublayers' rules: each projection is called twice.
        "attention": (
            lambda: _shared_model(
                (2, 4, 6), _SelfAttention(L.MultiHeadAttention(num_heads=2, key_dim=3))
            ),
            (2, 4, 6),
            None,
        ),
        # A nested model called twice: each of its layers is called twice.
        "nested_model": (
            lambda: _shared_model((2, 7, 6, 1), _tower((7, 6, 1))),
            (2, 7, 6, 1),
            None,
        ),
    }


class _SelfAttention(keras.layers.Layer):
    """`attention(x, x)` as one layer of one input (a layer taking several is not shared here)."""

    def __init__(self, attention, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention

    def call(self, inputs):
        return self.attention(inputs, inputs)


SHARED_CASES = _shared_cases()


# Over 3 s on the 2-core machine: attention's general path (a loop over units), and the
# unknown-batch and XLA traces of the convolutions and the LSTM.
SLOW_SHARED = {("attention", variant) for variant in VARIANTS} | {
    ("conv2d", "unknown_batch"),
    ("conv2d_chained", "unknown_batch"),
    ("lstm", "unknown_batch"),
    ("lstm", "jit"),
}


@pytest.mark.parametrize(
    ("case", "variant"),
    [
        pytest.param(case, variant, marks=pytest.mark.slow)
        if (case, variant) in SLOW_SHARED
        else (case, variant)
        for case in sorted(SHARED_CASES)
        for variant in VARIANTS
    ],
)
def test_a_shared_layer_takes_the_fast_path_with_the_general_paths_clipped_sums(case, variant):
    build, input_shape, vocabulary = SHARED_CASES[case]
    x = case_inputs(case, input_shape, vocabulary)
    model = build()
    report = pydp_r.clipping_report(model)
    assert report.path == "fast", str(report)
    assert any("called 2 times" in entry.detail for entry in report), str(report)
    assert_rule_matches_general_path(model, x, _targets(len(case)), variant)


def _siamese(image_shape):
    """A Siamese network: one convolutional tower (with BatchNormalization, replaced) applied
    to two images, the Euclidean distance of the embeddings in keras.ops inside a Lambda, then
    BatchNormalization of that one value and a sigmoid Dense."""

    def distance(embeddings):
        first, second = embeddings
        squared = keras.ops.sum(keras.ops.square(first - second), axis=1, keepdims=True)
        return keras.ops.sqrt(keras.ops.maximum(squared, keras.backend.epsilon()))

    keras.utils.set_random_seed(0)
    image = keras.Input(image_shape)
    hidden = keras.layers.BatchNormalization()(image)
    hidden = keras.layers.Conv2D(3, 3, activation="tanh")(hidden)
    hidden = keras.layers.AveragePooling2D(2)(hidden)
    hidden = keras.layers.BatchNormalization()(keras.layers.Flatten()(hidden))
    tower = keras.Model(image, keras.layers.Dense(4, activation="tanh")(hidden), name="tower")
    first, second = keras.Input(image_shape), keras.Input(image_shape)
    merged = keras.layers.Lambda(distance, output_shape=(1,))([tower(first), tower(second)])
    merged = keras.layers.BatchNormalization()(merged)
    outputs = keras.layers.Dense(1, activation="sigmoid")(merged)
    return pydp_r.replace_batch_norm(keras.Model([first, second], outputs))


@pytest.mark.parametrize("num_microbatches", [None, 2])
def test_a_siamese_network_takes_the_fast_path_with_the_general_paths_clipped_sums(
    num_microbatches,
):
    model = _siamese((9, 8, 1))
    report = pydp_r.clipping_report(model)
    assert report.path == "fast", str(report)
    shared = {entry.name for entry in report if "called 2 times" in entry.detail}
    tower_layers = [layer for layer in model.get_layer("tower").layers if layer.trainable_weights]
    assert shared == {f"tower/{layer.name}" for layer in tower_layers}, str(report)
    rng = np.random.default_rng(9)
    x = tuple(rng.normal(size=(8, 9, 8, 1)).astype("float32") for _ in range(2))
    y = rng.integers(0, 2, size=(8, 1)).astype("float32")
    assert_same_clipped_sums(model, x, y, clip=0.05, num_microbatches=num_microbatches)


@pytest.mark.slow  # over 3 s: the full tier
def test_a_siamese_fit_takes_the_fast_path(monkeypatch):
    calls = []
    original = fast_clipping.clipped_gradient_sum
    monkeypatch.setattr(
        fast_clipping, "clipped_gradient_sum", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    model = _siamese((9, 8, 1))
    rng = np.random.default_rng(10)
    x = tuple(rng.normal(size=(16, 9, 8, 1)).astype("float32") for _ in range(2))
    y = rng.integers(0, 2, size=(16, 1)).astype("float32")
    model.compile(optimizer=pydp_r.DPAdam(1.0, 1.0), loss="binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert calls  # the fit step took the fast path, and did not leave it while tracing:
    assert pydp_r.clipping_report(model).path == "fast"


class _Patches(keras.layers.Layer):
    """keras-io's ViT and MLP-Mixer `Patches`: non-overlapping patches as a sequence."""

    def call(self, images):
        patches = keras.ops.image.extract_patches(images, 4)
        shape = keras.ops.shape(patches)
        return keras.ops.reshape(patches, (shape[0], shape[1] * shape[2], shape[3]))


class _PositionEmbedding(keras.layers.Layer):
    """keras-io's (keras_hub's) PositionEmbedding: a weight broadcast to the inputs' shape."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=input_shape[1:], name="embeddings")

    def call(self, inputs):
        embeddings = keras.ops.convert_to_tensor(self.embeddings)
        return keras.ops.broadcast_to(embeddings, keras.ops.shape(inputs))


class _FNetAndGatingBlock(keras.layers.Layer):
    """keras-io's FNet layer (a 2-D Fourier transform's real part) followed by gMLP's spatial
    gating unit (a split along the channels)."""

    def __init__(self, patches, width, **kwargs):
        super().__init__(**kwargs)
        self.feed_forward = keras.layers.Dense(width, activation="gelu")
        self.normalize = keras.layers.LayerNormalization()
        self.spatial_projection = keras.layers.Dense(patches, bias_initializer="ones")

    def call(self, inputs):
        x = keras.ops.fft2((inputs, keras.ops.zeros_like(inputs)))[0] + inputs
        x = self.normalize(x + self.feed_forward(x))
        u, v = keras.ops.split(x, 2, axis=2)
        v = self.spatial_projection(keras.ops.transpose(v, (0, 2, 1)))
        return u * keras.ops.transpose(v, (0, 2, 1))


def test_keras_io_vision_transformer_parts_take_the_fast_path_with_the_loop_clipped_sums():
    # Preprocessing in the model (deterministic layers, so both paths see the same inputs),
    # patches, a position embedding that needs the batch size, an FNet block and a split.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Resizing(16, 16)(x)
    x = keras.layers.CenterCrop(12, 12)(x)
    x = keras.layers.Dense(8)(_Patches()(x))
    x = x + _PositionEmbedding()(x)
    x = _FNetAndGatingBlock(patches=9, width=8)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(BATCH, 12, 12, 3)).astype("float32")
    assert_same_clipped_sums(model, images, _targets(0) * 30, num_microbatches=None)
    assert_same_clipped_sums(model, images, _targets(1) * 30, num_microbatches=4)
