"""`clipping_report` and what it proves: real Keras code (keras.ops between layers, composite
layers, subclassed models, user declarations) takes the fast path only where its clipped sums
equal the per-example loop's, and says which path it took."""

import logging
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_grad_norms import BATCH, _targets, assert_rule_matches_general_path

import pydp_r
from pydp_r import grad_norms
from pydp_r.grad_norms import registry
from pydp_r.step import fast_clipping

SHAPE = (6, 4)


def _model_around(operation, input_shape=SHAPE):
    """Input -> Dense -> `operation` (keras.ops) -> Flatten -> Dense(1), plus a skip from the
    first Dense so that every example's gradient reaches it whatever the operation does."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(input_shape[-1], activation="tanh")(inputs)
    outputs = keras.ops.cast(operation(hidden), "float32")
    flat = keras.layers.Flatten()
    joined = keras.layers.Concatenate()([flat(outputs), keras.layers.Flatten()(hidden)])
    return keras.Model(inputs, keras.layers.Dense(1)(joined))


ops = keras.ops
positive = ops.sigmoid  # keeps log and sqrt away from 0
# Registered operation class name -> a use of it on a graph tensor `h` of shape (batch, 6, 4).
PER_EXAMPLE_USES = {
    "Absolute": lambda h: ops.abs(h),
    "Negative": lambda h: -h,
    "Exp": lambda h: ops.exp(h),
    "Log": lambda h: ops.log(positive(h)),
    "Sqrt": lambda h: ops.sqrt(positive(h)),
    "Square": lambda h: ops.square(h),
    "Sin": lambda h: ops.sin(h),
    "Cos": lambda h: ops.cos(h),
    "Tanh": lambda h: ops.tanh(h),
    "Erf": lambda h: ops.erf(h),
    "Clip": lambda h: ops.clip(h, -0.5, 0.5),
    "Cast": lambda h: ops.cast(h, "float64"),
    "StopGradient": lambda h: ops.stop_gradient(h) * h,
    "Relu": lambda h: ops.relu(h),
    "Relu6": lambda h: ops.relu6(h * 8),
    "Gelu": lambda h: ops.gelu(h),
    "Silu": lambda h: ops.silu(h),
    "Sigmoid": lambda h: ops.sigmoid(h),
    "HardSigmoid": lambda h: ops.hard_sigmoid(h),
    "Softplus": lambda h: ops.softplus(h),
    "Softsign": lambda h: ops.softsign(h),
    "Elu": lambda h: ops.elu(h),
    "Selu": lambda h: ops.selu(h),
    "LeakyRelu": lambda h: ops.leaky_relu(h),
    # Graph tensors of the output's rank, and batch-free operands of lower rank or leading 1.
    "Add": lambda h: h + h[:, :1] + np.arange(4, dtype="float32"),
    "Subtract": lambda h: h - np.ones((1, 6, 4), "float32") - ops.flip(h, axis=1),
    "Multiply": lambda h: h * ops.tanh(h) * 3.0,
    "Divide": lambda h: ops.divide(h, 2.0 + positive(h)),
    "TrueDivide": lambda h: ops.true_divide(h, 1.5 + ops.square(h)),
    "Power": lambda h: ops.power(positive(h), 3.0),
    "Maximum": lambda h: ops.maximum(h, ops.flip(h, axis=2)),
    "Minimum": lambda h: ops.minimum(h, 0.1),
    "Where": lambda h: ops.where(np.array([True, False, True, False]), h, 0.5 * h),
    # Along axes other than the batch axis.
    "Softmax": lambda h: ops.softmax(h, axis=1),
    "LogSoftmax": lambda h: ops.log_softmax(h, axis=-1),
    "Normalize": lambda h: ops.normalize(h, axis=-1),
    "Mean": lambda h: ops.mean(h, axis=1, keepdims=True) * h,
    "Sum": lambda h: ops.sum(h, axis=[1, 2], keepdims=True) * h,
    "Max": lambda h: ops.max(h, axis=-1),
    "Min": lambda h: ops.min(h, axis=1),
    "Std": lambda h: ops.std(h, axis=1),
    "Var": lambda h: ops.var(h, axis=2),
    "Logsumexp": lambda h: ops.logsumexp(h, axis=1),
    "Cumsum": lambda h: ops.cumsum(h, axis=1),
    "Flip": lambda h: ops.flip(h, axis=-1) * h,
    "Norm": lambda h: ops.norm(h, axis=-1),
    "Concatenate": lambda h: ops.concatenate([h, ops.square(h)], axis=1),
    "Stack": lambda h: ops.stack([h, ops.tanh(h)], axis=1),
    # Shapes.
    "Reshape": lambda h: ops.reshape(h, (-1, 3, 8)),
    "Transpose": lambda h: ops.transpose(h, (0, 2, 1)),
    "ExpandDims": lambda h: ops.expand_dims(h, -1),
    "Squeeze": lambda h: ops.squeeze(h[:, :1], axis=1),
    "GetItem": lambda h: h[:, 1:5:2, ::-1] + h[..., :1][:, :2],
    "AveragePool": lambda h: ops.average_pool(h, 2, 2),
    "MaxPool": lambda h: ops.max_pool(h, 3, 1, padding="same"),
    "Matmul": lambda h: (
        ops.matmul(h, ops.transpose(h, (0, 2, 1))) + ops.matmul(h, np.eye(4, 6, dtype="float32"))
    ),
    # Images (ViT and MLP-Mixer patches), splits and Fourier transforms (gMLP, FNet).
    "ExtractPatches": lambda h: ops.image.extract_patches(ops.reshape(h, (-1, 6, 4, 1)), 2),
    "Split": lambda h: ops.split(h, 2, axis=2)[0] * ops.split(h, [1, 4], axis=-2)[1][:, :1, :2],
    "ZerosLike": lambda h: h + ops.zeros_like(h),
    "OnesLike": lambda h: h * ops.ones_like(h, dtype="float32"),
    "FFT": lambda h: ops.fft((h, ops.square(h)))[1],
    "FFT2": lambda h: ops.fft2((h, 0.5 * h))[0],
    "IFFT2": lambda h: ops.ifft2((h, ops.tanh(h)))[1],
    "RFFT": lambda h: ops.rfft(h)[0],
    "IRFFT": lambda h: ops.irfft((h, ops.square(h))),
}


def _operation_names(model):
    return {type(operation).__name__ for operation in model.operations}


def test_every_registered_operation_has_a_use_compared_with_the_per_example_loop():
    assert set(registry.registered_operations()) == set(PER_EXAMPLE_USES)


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE_USES))
def test_a_registered_operation_gives_the_per_example_clipped_sum(name):
    model = _model_around(PER_EXAMPLE_USES[name])
    assert name in _operation_names(model)  # the use exercises the operation it is named for
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)
    x = np.random.default_rng(len(name)).normal(size=(BATCH, *SHAPE)).astype("float32")
    assert_rule_matches_general_path(model, x, _targets(len(name)), "examples")


# Uses that would mix examples or lose the batch axis: each must be refused, naming the op.
BATCH_MIXING_USES = {
    "Mean": lambda h: h - ops.mean(h, axis=0, keepdims=True),
    "Sum": lambda h: h * ops.sum(h),
    "Concatenate": lambda h: ops.concatenate([h, h], axis=0),
    "Reshape": lambda h: ops.reshape(h, (-1, 4)),
    "Add": lambda h: h + ops.reshape(h[:, 0, :1], (-1,)),  # (batch,) against the last axis
    "Transpose": lambda h: ops.transpose(h, (1, 0, 2)),
    "ExpandDims": lambda h: ops.expand_dims(h, 0),
    "Squeeze": lambda h: ops.squeeze(h),
    "Softmax": lambda h: ops.softmax(h, axis=0),
    # (batch, 24) @ (batch, 24) as matrices: the batch axis is the contracted one.
    "Matmul": lambda h: ops.matmul(ops.reshape(h, (-1, 24)), ops.reshape(h, (-1, 24))),
    # A rank-3 tensor is one unbatched image: the batch axis becomes its height.
    "ExtractPatches": lambda h: ops.image.extract_patches(h, 2),
    "Split": lambda h: ops.split(h, 2, axis=0)[0],
}


@pytest.mark.parametrize("name", sorted(BATCH_MIXING_USES))
def test_an_operation_that_may_mix_examples_sends_the_model_to_the_general_path(name):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Dense(4)(inputs)
    report = fast_clipping.clipping_report(keras.Model(inputs, BATCH_MIXING_USES[name](hidden)))
    assert report.path == "general"
    assert f"({name})" in report.reason


@pytest.mark.parametrize("transform", [ops.fft2, ops.ifft2])
def test_a_fourier_transform_over_the_batch_axis_is_refused(transform):
    # Keras builds it only where the batch size is known: (4, 6) with its axes transformed.
    inputs = keras.Input(batch_shape=(4, 6))
    hidden = keras.layers.Dense(6)(inputs)
    real = transform((hidden, ops.zeros_like(hidden)))[0]
    report = fast_clipping.clipping_report(keras.Model(inputs, keras.layers.Dense(1)(real)))
    assert report.path == "general"
    assert "the batch axis among them" in report.reason


def _transformer_encoder(vocabulary=40, length=8, width=8):
    """Embedding, MultiHeadAttention and a feed-forward part, each with an `h + a` residual."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, width)(inputs)
    a = keras.layers.MultiHeadAttention(2, width // 2)(h, h)
    h = keras.layers.LayerNormalization()(h + a)
    f = keras.layers.Dense(width)(keras.layers.Dense(2 * width, activation="relu")(h))
    h = keras.layers.LayerNormalization()(h + f)
    return keras.Model(inputs, keras.layers.Dense(1)(ops.mean(h, axis=1)))


@pytest.mark.slow  # over 3 s: the full tier
def test_a_transformer_encoder_with_residual_additions_takes_the_fast_path():
    model = _transformer_encoder()
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)
    by_type = {entry.type: entry for entry in report}
    assert by_type["Add"].detail == "per-example operation"
    assert by_type["Embedding"].detail == "rule EmbeddingRule"
    assert by_type["EinsumDense"].detail == "rule EinsumDenseRule"
    x = np.random.default_rng(0).integers(0, 40, size=(BATCH, 8)).astype("int32")
    for variant in ("examples", "microbatches", "unknown_batch"):
        assert_rule_matches_general_path(model, x, _targets(), variant)


class TokenAndPositionEmbedding(keras.layers.Layer):
    """The Keras example's layer: its position embedding is called on `arange(length)`, a
    tensor with no batch axis."""

    def __init__(self, vocabulary, length, width, **kwargs):
        super().__init__(**kwargs)
        self.tokens = keras.layers.Embedding(vocabulary, width)
        self.positions = keras.layers.Embedding(length, width)

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[-1])
        return self.tokens(inputs) + self.positions(positions)


def _token_position_model(length):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((length,), dtype="int32")
    hidden = TokenAndPositionEmbedding(30, length, 4)(inputs)
    hidden = keras.layers.Dense(3, activation="tanh")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("length", [BATCH, 5])  # batch size == sequence length, and not
def test_a_position_embedding_on_a_batch_free_tensor_is_tiled_over_the_batch(
    monkeypatch, declared, length
):
    # Read as rows, the position embedding's (length, width) output gradient would be `length`
    # examples: at batch == length a wrong clipped sum, else a shape error. Its output only
    # enters the batch through `+`, so its input is tiled over the batch and its rule sees each
    # example's gradient (issue #27): the same per-example norms and clipped sums as the
    # general path, in every variant of the harness.
    monkeypatch.setattr(registry, "_PER_EXAMPLE", dict(registry._PER_EXAMPLE))
    if declared:
        grad_norms.register_per_example(TokenAndPositionEmbedding, through_sublayers=True)
    model = _token_position_model(length)
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)
    entry = next(e for e in report if e.type == "TokenAndPositionEmbedding")
    assert entry.detail.startswith("through its sublayers' rules"), entry.detail
    tiled = [e for e in report if e.type == "Embedding" and "tiled over the batch" in e.detail]
    layer = next(la for la in model.layers if isinstance(la, TokenAndPositionEmbedding))
    assert [e.name for e in tiled] == [f"{entry.name}/{layer.positions.name}"]
    assert tiled[0].detail.startswith("rule EmbeddingRule")
    x = np.random.default_rng(length).integers(0, 30, size=(BATCH, length)).astype("int32")
    for variant in ("examples", "microbatches", "sample_weights", "unknown_batch", "jit"):
        assert_rule_matches_general_path(model, x, _targets(length), variant)


class _PositionsUsedOtherwise(keras.layers.Layer):
    """Position embeddings that do not only enter the batch through one `+`: not tiled."""

    def __init__(self, use, **kwargs):
        super().__init__(**kwargs)
        self.use = use
        self.tokens = keras.layers.Embedding(30, 4)
        self.positions = keras.layers.Embedding(5, 4)
        self.norm = keras.layers.LayerNormalization()

    def call(self, inputs):
        tokens = self.tokens(inputs)
        positions = ops.arange(ops.shape(inputs)[-1])
        if self.use == "twice":  # also summed over positions: the tiled sum would be B times it
            table = self.positions(positions)
            return tokens + table + ops.sum(table)
        if self.use == "scaled":  # batch-free arithmetic before the broadcast
            return tokens + 2.0 * self.positions(positions)
        if self.use == "matmul":  # contracted, not broadcast
            return ops.matmul(tokens, ops.transpose(self.positions(positions)))
        # LayerNormalization is not known to act on each position alone: not tiled.
        return tokens + self.norm(self.positions(positions))


@pytest.mark.parametrize("use", ["twice", "scaled", "matmul", "not_positionwise"])
def test_a_sublayer_off_the_batch_used_otherwise_is_vectorized_with_its_layer(use):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Flatten()(_PositionsUsedOtherwise(use)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    report = fast_clipping.clipping_report(model)
    entry = next(e for e in report if e.type == "_PositionsUsedOtherwise")
    assert entry.path == "fast"
    assert entry.detail.startswith("vectorized alone over the batch"), entry.detail
    assert not any(e.detail.endswith("(its input is tiled over the batch)") for e in report)
    x = np.random.default_rng(1).integers(0, 30, size=(BATCH, 5)).astype("int32")
    assert_rule_matches_general_path(model, x, _targets(5), "examples")


class _BatchedPositions(keras.layers.Layer):
    """A declared composite whose sublayers all see the batch: verified, their rules used."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tokens = keras.layers.Embedding(30, 4)
        self.mix = keras.layers.Dense(4)

    def call(self, inputs):
        return self.mix(self.tokens(inputs))


def test_a_true_through_sublayers_declaration_is_verified_and_uses_the_sublayer_rules(monkeypatch):
    monkeypatch.setattr(registry, "_PER_EXAMPLE", dict(registry._PER_EXAMPLE))
    grad_norms.register_per_example(_BatchedPositions, through_sublayers=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Flatten()(_BatchedPositions(name="batched_positions")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    report = fast_clipping.clipping_report(model)
    details = {entry.name: entry.detail for entry in report}
    assert "declaration verified" in details["batched_positions"]
    inside = [entry for entry in report if entry.name.startswith("batched_positions/")]
    assert [(entry.type, entry.detail) for entry in inside] == [
        ("Embedding", "rule EmbeddingRule"),
        ("Dense", "rule DenseRule"),
    ]
    x = np.random.default_rng(1).integers(0, 30, size=(BATCH, 5)).astype("int32")
    assert_rule_matches_general_path(model, x, _targets(1), "examples")


class _Classifier(keras.Model):
    """A subclassed model: registered layers joined by keras.ops, a residual among them."""

    def __init__(self):
        super().__init__(name="classifier")
        self.hidden = keras.layers.Dense(6, activation="relu")
        self.inner = keras.layers.Dense(6)
        self.norm = keras.layers.LayerNormalization()
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        hidden = self.hidden(inputs)
        hidden = self.norm(hidden + self.inner(hidden))
        return self.out(ops.mean(hidden, axis=1))


def test_a_subclassed_model_is_traced_and_its_fit_step_is_the_per_example_reference(monkeypatch):
    from test_fast_clipping import assert_fit_step_is_the_batch_of_one_reference

    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, *SHAPE)).astype("float32")
    keras.utils.set_random_seed(0)
    model = _Classifier()
    model(x[:1])
    report = fast_clipping.clipping_report(model, x)
    assert report.path == "fast", str(report)
    assert [entry.type for entry in report] == [
        "Dense",
        "Dense",
        "Add",
        "LayerNormalization",
        "Mean",
        "Dense",
    ]
    calls = []
    original = fast_clipping.clipped_gradient_sum
    monkeypatch.setattr(
        fast_clipping, "clipped_gradient_sum", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    assert_fit_step_is_the_batch_of_one_reference(model, x, _targets(2), clip=0.5)
    assert calls  # the fit step took the fast path


def test_leaving_the_fast_path_is_logged_once_naming_the_layer_and_reason(caplog):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(BATCH, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4)(inputs)
    hidden = hidden - ops.mean(hidden, axis=0, keepdims=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        model.compile(optimizer=pydp_r.DPSGD(1.0, 0.0), loss="mse")
    with caplog.at_level(logging.WARNING, logger="pydp_r"):
        model.fit(x, _targets(3), batch_size=4, epochs=2, verbose=0)
        model.fit(x, _targets(3), batch_size=8, epochs=1, verbose=0)  # traced again
    lines = [r.getMessage() for r in caplog.records if "general per-example path" in r.message]
    assert len(lines) == 1
    assert "(Mean)" in lines[0] and "runs along the batch axis" in lines[0]


def test_a_reason_found_while_tracing_is_kept_in_the_report():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activity_regularizer="l2")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    report = fast_clipping.clipping_report(model)
    assert report.path == "general" and "regularization" in report.reason
    fast_clipping.note_general_path(model, fast_clipping.NotSupported("layer 'x' is called twice"))
    assert "called twice" in str(fast_clipping.clipping_report(model))


def test_the_report_reads_as_a_table_and_as_columns():
    report = pydp_r.clipping_report(_transformer_encoder())
    text = str(report)
    assert text.splitlines()[0] == f"Model '{report.model_name}': fast path"
    assert text.splitlines()[1].split() == ["name", "type", "path", "detail"]
    columns = report.to_columns()
    assert list(columns) == ["name", "type", "path", "detail"]
    assert len(columns["name"]) == len(report) and set(columns["path"]) == {"fast"}


def test_a_trainable_batch_normalization_is_reported_refused():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    report = fast_clipping.clipping_report(model)
    assert report.path == "refused" and "BatchNormalization" in report.reason
    model.layers[0].trainable = False
    assert fast_clipping.clipping_report(model).path == "fast"


def test_tensorflow_code_inside_a_layer_is_not_proven_and_the_report_says_why():
    class Shuffled(keras.layers.Layer):
        def call(self, inputs):
            return tf.random.shuffle(inputs)  # mixes examples; TensorFlow, so not traceable

    model = keras.Sequential([keras.Input((3,)), Shuffled(), keras.layers.Dense(1)])
    report = fast_clipping.clipping_report(model)
    assert report.path == "general"
    assert "shuffled (Shuffled)" in report.reason and "cannot be traced" in report.reason


def _shared_on(parts, shared, input_shape):
    """`shared` called on each slice of the input in `parts` (slices along axis 1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    outputs = [keras.layers.Flatten()(shared(inputs[:, part])) for part in parts]
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(outputs)))


def test_a_shared_layer_on_inputs_of_different_shapes_falls_back_and_says_why():
    # A convolution's rule adds its calls as rows of one example, which needs one shape.
    from test_fast_clipping import assert_fit_step_is_the_batch_of_one_reference

    model = _shared_on([slice(0, 6), slice(2, 6)], keras.layers.Conv2D(2, 3), (6, 5, 2))
    report = fast_clipping.clipping_report(model)
    assert report.path == "general"
    assert "on inputs of different or unknown shapes" in report.reason, report.reason
    # A Dense's calls are positions of the example, of any number: fast.
    dense = _shared_on([slice(0, 6), slice(2, 6)], keras.layers.Dense(2), (6, 5, 2))
    assert fast_clipping.clipping_report(dense).path == "fast"
    x = np.random.default_rng(11).normal(size=(BATCH, 6, 5, 2)).astype("float32")
    assert_fit_step_is_the_batch_of_one_reference(model, x, _targets(11), clip=0.5)


def test_a_shared_nested_model_whose_calls_differ_in_shape_falls_back_while_tracing():
    # The tower's own graph does not show the sizes its calls get; the traced step does.
    keras.utils.set_random_seed(0)
    tower = keras.Sequential(
        [
            keras.Input((None, 5, 2)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model = _shared_on([slice(0, 6), slice(2, 6)], tower, (6, 5, 2))
    assert fast_clipping.clipping_report(model).path == "fast"
    x = tf.constant(np.random.default_rng(12).normal(size=(BATCH, 6, 5, 2)), tf.float32)
    with pytest.raises(fast_clipping.NotSupported, match="different or unknown shapes"):
        fast_clipping.clipped_gradient_sum(
            model, lambda targets, predictions: predictions[:, 0], x, {}, 1.0
        )


class _SharedInside(keras.Model):
    """A subclassed model calling one Dense on its input and on a function of it."""

    def __init__(self):
        super().__init__(name="shared_inside")
        self.shared = keras.layers.Dense(4, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        both = ops.concatenate([self.shared(inputs), self.shared(ops.square(inputs))], axis=-1)
        return self.out(ops.mean(both, axis=1))


def test_a_subclassed_model_calling_a_layer_twice_takes_the_fast_path(monkeypatch):
    from test_fast_clipping import assert_fit_step_is_the_batch_of_one_reference

    rng = np.random.default_rng(13)
    x = rng.normal(size=(BATCH, *SHAPE)).astype("float32")
    keras.utils.set_random_seed(0)
    model = _SharedInside()
    model(x[:1])
    report = fast_clipping.clipping_report(model, x)
    assert report.path == "fast", str(report)
    assert [entry.detail for entry in report if entry.type == "Dense"] == [
        "rule DenseRule; called 2 times (shared: per example, the calls' gradients are added)",
        "rule DenseRule",
    ]
    calls = []
    original = fast_clipping.clipped_gradient_sum
    monkeypatch.setattr(
        fast_clipping, "clipped_gradient_sum", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    assert_fit_step_is_the_batch_of_one_reference(model, x, _targets(13), clip=0.5)
    assert calls  # the fit step took the fast path, and did not leave it while tracing:
    assert fast_clipping.clipping_report(model, x).path == "fast"


# Keras' image preprocessing declared per-example, each as a model would build it.
IMAGE_LAYERS = {
    "Resizing": lambda: keras.layers.Resizing(6, 10),
    "CenterCrop": lambda: keras.layers.CenterCrop(6, 6),
    "RandomCrop": lambda: keras.layers.RandomCrop(6, 6, seed=1),
    "RandomFlip": lambda: keras.layers.RandomFlip(seed=1),
    "RandomRotation": lambda: keras.layers.RandomRotation(0.3, seed=1),
    "RandomZoom": lambda: keras.layers.RandomZoom(0.3, 0.3, seed=1),
    "RandomTranslation": lambda: keras.layers.RandomTranslation(0.3, 0.3, seed=1),
    "RandomShear": lambda: keras.layers.RandomShear(0.3, 0.3, seed=1),
    "RandomContrast": lambda: keras.layers.RandomContrast(0.5, seed=1),
    "RandomBrightness": lambda: keras.layers.RandomBrightness(0.5, seed=1),
    "AutoContrast": lambda: keras.layers.AutoContrast(),
    "Solarization": lambda: keras.layers.Solarization(0.5, seed=1),
    "RandomGrayscale": lambda: keras.layers.RandomGrayscale(0.5, seed=1),
    "RandomInvert": lambda: keras.layers.RandomInvert(0.5, seed=1),
    "RandomHue": lambda: keras.layers.RandomHue(0.5, value_range=(0, 1), seed=1),
    "RandomSaturation": lambda: keras.layers.RandomSaturation(0.5, value_range=(0, 1), seed=1),
    "RandomPosterization": lambda: keras.layers.RandomPosterization(2, (0, 1), seed=1),
    "RandomColorDegeneration": lambda: keras.layers.RandomColorDegeneration(0.5, seed=1),
    "RandomSharpness": lambda: keras.layers.RandomSharpness(0.5, value_range=(0, 1), seed=1),
}
# Layers that combine the images of a batch: the oracle below must catch them.
BATCH_MIXING_IMAGE_LAYERS = {
    "MixUp": lambda: keras.layers.MixUp(seed=1),
    "CutMix": lambda: keras.layers.CutMix(seed=1),
    "Equalization": lambda: keras.layers.Equalization(value_range=(0, 1)),
}


def _rows_kept_when_other_images_change(make_layer):
    """Whether a layer, run in training mode with the same seed, gives each image the same
    output when every other image of the batch is replaced (each image transformed alone, its
    randomness independent of the data)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(BATCH, 8, 8, 3)).astype("float32")
    outputs = np.asarray(make_layer()(images, training=True))
    for kept in range(BATCH):
        others = rng.uniform(size=images.shape).astype("float32")
        others[kept] = images[kept]
        changed = np.asarray(make_layer()(others, training=True))
        if not np.allclose(outputs[kept], changed[kept], atol=1e-6):
            return False
    return True


@pytest.mark.parametrize("name", sorted(IMAGE_LAYERS))
def test_a_declared_image_layer_transforms_each_image_alone(name):
    assert _rows_kept_when_other_images_change(IMAGE_LAYERS[name])


@pytest.mark.parametrize("name", sorted(BATCH_MIXING_IMAGE_LAYERS))
def test_image_layers_that_combine_images_are_caught_and_not_declared(name):
    make_layer = BATCH_MIXING_IMAGE_LAYERS[name]
    assert not _rows_kept_when_other_images_change(make_layer)
    assert grad_norms.per_example_kind(make_layer()) is None


def test_every_declared_image_layer_is_checked_for_mixing():
    declared = {
        layer_type.__name__
        for layer_type in registry.per_example_types()
        if "image_preprocessing" in layer_type.__module__
    }
    assert declared == set(IMAGE_LAYERS)


@pytest.mark.parametrize("name", ["RandomFlip", "Resizing", "RandomZoom"])
def test_an_image_layer_on_a_batch_of_images_takes_the_fast_path(name):
    inputs = keras.Input((8, 8, 3))
    hidden = IMAGE_LAYERS[name]()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)


def test_an_image_layer_on_a_rank_3_tensor_is_one_image_and_is_refused():
    # (batch, 8, 8) is taken as one 8-channel image of height `batch`: a flip along its
    # height would swap examples.
    inputs = keras.Input((8, 8))
    hidden = keras.layers.RandomFlip("vertical")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "general"
    assert "(RandomFlip): not per-example here" in report.reason
    assert "as one image" in report.reason


class _BroadcastPositionEmbedding(keras.layers.Layer):
    """keras_hub's PositionEmbedding: its weight broadcast to the inputs' shape, which needs
    the batch size as a value."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=input_shape[1:], name="embeddings")

    def call(self, inputs):
        embeddings = ops.convert_to_tensor(self.embeddings)
        return ops.broadcast_to(embeddings, ops.shape(inputs))


class _FirstRowOfBroadcast(_BroadcastPositionEmbedding):
    """Its output has no batch axis (the first row of the broadcast weight)."""

    def call(self, inputs):
        return super().call(inputs)[0]


def test_a_call_that_needs_the_batch_size_is_traced_with_one_and_gives_the_loop_clipped_sum():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Dense(4)(inputs)
    hidden = hidden + _BroadcastPositionEmbedding()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "fast", str(report)
    x = np.random.default_rng(1).normal(size=(BATCH, *SHAPE)).astype("float32")
    assert_rule_matches_general_path(model, x, _targets(1), "examples")


def test_a_traced_call_whose_output_loses_the_batch_axis_is_refused():
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(_FirstRowOfBroadcast()(hidden)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "general"
    assert "does not keep the batch axis first" in report.reason


def test_a_call_that_cannot_be_traced_even_with_a_batch_size_says_both_failures():
    class RawTensorFlow(keras.layers.Layer):
        def call(self, inputs):
            return tf.roll(inputs, 1, axis=0)

    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(RawTensorFlow()(hidden)))
    report = fast_clipping.clipping_report(model)
    assert report.path == "general"
    assert "cannot be traced on symbolic tensors" in report.reason
    assert "nor with a batch of" in report.reason


class _CenteredInTraining(keras.layers.Layer):
    """Subtracts the batch mean, but only in training: per-example at inference, not in DP
    training."""

    def call(self, inputs, training=None):
        if training:
            return inputs - keras.ops.mean(inputs, axis=0, keepdims=True)
        return inputs


class _CenteredModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(3)
        self.out = keras.layers.Dense(1)

    def call(self, inputs, training=None):
        hidden = self.hidden(inputs)
        if training:
            hidden = hidden - keras.ops.mean(hidden, axis=0, keepdims=True)
        return self.out(hidden)


def test_a_call_that_mixes_examples_only_in_training_is_traced_in_training_mode():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1)(_CenteredInTraining()(keras.layers.Dense(3)(inputs)))
    functional = keras.Model(inputs, outputs)
    subclassed = _CenteredModel()
    x = np.zeros((2, 4), "float32")
    subclassed(x)
    for model in (functional, subclassed):
        report = pydp_r.clipping_report(model, x)
        assert report.path == "general", str(report)
        assert "runs along the batch axis" in str(report)


class _StochasticDepth(keras.layers.Layer):
    """Keras' CCT example: in training, each example's residual branch is kept or dropped by a
    random draw of the batch's size (data-independent, row i for example i)."""

    def call(self, inputs, training=None):
        if training:
            shape = (keras.ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
            keep = keras.ops.floor(0.8 + keras.random.uniform(shape, 0, 1))
            return inputs / 0.8 * keep
        return inputs


def test_a_random_draw_of_the_batchs_size_keeps_the_model_per_example():
    inputs = keras.Input((5, 4))
    hidden = keras.layers.Dense(4)(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(hidden + _StochasticDepth()(hidden)))
    model = keras.Model(inputs, outputs)
    report = pydp_r.clipping_report(model)
    assert report.path == "fast", str(report)
    model.compile(optimizer=pydp_r.DPSGD(1.0, 1.0, learning_rate=0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 5, 4)).astype("float32")
    history = model.fit(x, x[:, :1, 0], batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
