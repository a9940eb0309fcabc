"""DP-Adam step time and peak memory relative to plain Adam across model families, two sizes each.

The method is `bench_dp_step.py`'s: in one process the same model is compiled with plain Adam
and with DP-Adam, both are warmed up (tracing excluded), then `fit()` epochs of `--steps`
batches alternate for `--repeats` rounds; the ratio is the median over rounds of DP time /
plain time of the same round, and the spread is its min-max over rounds. "cpu ratio" is the same
median of the process's CPU time (all threads), which time taken by other tenants of a shared
machine does not inflate the way it does wall time. First trace:
seconds of the DP model's first one-step `fit()` (tracing included). Peak memory: each
configuration in its own process (peak resident set size of a short run). Which path DP took
(fast or general) is reported as well.

    python benchmarks/bench_zoo.py                       # every model
    python benchmarks/bench_zoo.py --models lstm_small   # some
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# name -> (family, batch size, input shape, vocabulary for integer inputs or None, classes)
ZOO = {
    "cifar_conv_small": ("conv", 64, (24, 24, 3), None, 10),
    "cifar_conv": ("conv", 128, (32, 32, 3), None, 10),
    "text_small": ("embedding", 128, (120,), 5000, 2),
    "text": ("embedding", 256, (200,), 10000, 2),
    "transformer_small": ("transformer", 32, (32,), 2000, 4),
    "transformer": ("transformer", 64, (64,), 4000, 4),
    "separable_small": ("separable", 32, (24, 24, 3), None, 10),
    "separable": ("separable", 64, (32, 32, 3), None, 10),
    "lstm_small": ("lstm", 32, (30, 8), None, 1),
    "lstm": ("lstm", 64, (60, 16), None, 1),
    "gru_small": ("gru", 32, (30, 8), None, 1),
    "gru": ("gru", 64, (60, 16), None, 1),
    "simple_rnn_small": ("simple_rnn", 32, (30, 8), None, 1),
    "simple_rnn": ("simple_rnn", 64, (60, 16), None, 1),
    "conv1d_small": ("conv1d", 64, (128, 4), None, 5),
    "conv1d": ("conv1d", 128, (256, 8), None, 5),
    "conv3d_small": ("conv3d", 16, (8, 16, 16, 1), None, 5),
    "conv3d": ("conv3d", 32, (12, 24, 24, 1), None, 5),
    "conv_transpose_small": ("conv_transpose", 32, (8, 8, 8), None, 10),
    "conv_transpose": ("conv_transpose", 64, (12, 12, 16), None, 10),
    "group_norm_small": ("group_norm", 32, (24, 24, 3), None, 10),
    "group_norm": ("group_norm", 64, (32, 32, 3), None, 10),
    "depthwise_small": ("depthwise", 32, (24, 24, 8), None, 10),
    "depthwise": ("depthwise", 64, (32, 32, 16), None, 10),
    # Real Keras code, unchanged (issue #27): keras.ops between layers, a user's composite
    # layer, a subclassed model, wrappers.
    "residual_transformer": ("residual_transformer", 64, (64,), 4000, 4),
    "custom_layer": ("custom_layer", 64, (64,), 4000, 4),
    "subclassed": ("subclassed", 64, (30, 16), None, 1),
    "bidirectional": ("bidirectional", 32, (30, 8), None, 1),
    "time_distributed": ("time_distributed", 64, (30, 16), None, 1),
    # Keras' siamese_contrastive: one tower called on both images of a pair (shared weights).
    "siamese": ("siamese", 16, (2, 28, 28, 1), None, 1),
    # Official Keras examples' models as written there (issue #27), at their batch sizes; the
    # data is synthetic, of their shapes and dtypes (`_example_data`).
    "keras_multi_input": ("keras_multi_input", 32, None, 10000, None),
    "keras_timeseries_conv": ("keras_timeseries_conv", 32, (500, 1), None, 2),
    "keras_bidirectional_imdb": ("keras_bidirectional_imdb", 32, (200,), 20000, 2),
    "keras_autoencoder": ("keras_autoencoder", 128, (28, 28, 1), None, None),
}


def _real_code_classes():
    """A user's layer (token and position embedding, as in Keras' text-classification example)
    and a subclassed model, defined the way users write them (not registered anywhere)."""
    import keras

    class TokenAndPositionEmbedding(keras.layers.Layer):
        def __init__(self, vocabulary, length, width, **kwargs):
            super().__init__(**kwargs)
            self.tokens = keras.layers.Embedding(vocabulary, width)
            self.positions = keras.layers.Embedding(length, width)

        def call(self, inputs):
            positions = keras.ops.arange(keras.ops.shape(inputs)[-1])
            return self.tokens(inputs) + self.positions(positions)

    class ResidualRegressor(keras.Model):
        def __init__(self, width):
            super().__init__(name="residual_regressor")
            self.inner = keras.layers.Dense(width, activation="relu")
            self.mix = keras.layers.Dense(width)
            self.norm = keras.layers.LayerNormalization()
            self.head = keras.layers.Dense(1)

        def call(self, inputs):
            hidden = self.inner(inputs)
            hidden = self.norm(hidden + self.mix(hidden))
            return self.head(keras.ops.mean(hidden, axis=1))

    return TokenAndPositionEmbedding, ResidualRegressor


def _encoder_block(x, width):
    """One transformer encoder block with `+` residuals (keras.ops, not Add layers)."""
    import keras

    layers = keras.layers
    x = layers.LayerNormalization()(x + layers.MultiHeadAttention(4, width // 4)(x, x))
    hidden = layers.Dense(width * 2, activation="relu")(x)
    return layers.LayerNormalization()(x + layers.Dense(width)(hidden))


def _keras_example(family: str):
    """The model of an official Keras example (keras-io), as its script builds it, and the
    arguments its script compiles it with (the optimizer aside)."""
    import keras

    import pydp_r

    layers = keras.layers
    if family == "keras_multi_input":  # guides/functional_api: 3 inputs, 2 outputs
        title_input = keras.Input(shape=(None,), name="title")
        body_input = keras.Input(shape=(None,), name="body")
        tags_input = keras.Input(shape=(12,), name="tags")
        title_features = layers.LSTM(128)(layers.Embedding(10000, 64)(title_input))
        body_features = layers.LSTM(32)(layers.Embedding(10000, 64)(body_input))
        x = layers.concatenate([title_features, body_features, tags_input])
        priority = layers.Dense(1, name="priority")(x)
        department = layers.Dense(4, name="department")(x)
        model = keras.Model(
            [title_input, body_input, tags_input],
            {"priority": priority, "department": department},
        )
        return model, {
            "loss": {
                "priority": keras.losses.BinaryCrossentropy(from_logits=True),
                "department": keras.losses.CategoricalCrossentropy(from_logits=True),
            },
            "loss_weights": {"priority": 1.0, "department": 0.2},
        }
    if family == "keras_timeseries_conv":  # timeseries/timeseries_classification_from_scratch
        inputs = keras.Input((500, 1))
        x = inputs
        for _ in range(3):
            x = layers.Conv1D(filters=64, kernel_size=3, padding="same")(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling1D()(x))
        # The DP migration's one change to the model; the plain model gets it too, so that
        # both train the same model.
        model = pydp_r.replace_batch_norm(keras.Model(inputs, outputs))
        return model, {"loss": "sparse_categorical_crossentropy"}
    if family == "keras_bidirectional_imdb":  # nlp/bidirectional_lstm_imdb
        inputs = keras.Input(shape=(None,), dtype="int32")
        x = layers.Embedding(20000, 128)(inputs)
        x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
        x = layers.Bidirectional(layers.LSTM(64))(x)
        outputs = layers.Dense(1, activation="sigmoid")(x)
        return keras.Model(inputs, outputs), {"loss": "binary_crossentropy"}
    # vision/autoencoder
    inputs = layers.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(inputs)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return keras.Model(inputs, x), {"loss": "binary_crossentropy"}


def _example_data(family: str, n: int):
    """Synthetic arrays of the shapes and dtypes the Keras example trains on."""
    import numpy as np

    rng = np.random.default_rng(0)
    if family == "keras_multi_input":  # titles of 10 words, bodies of 100, 12 tags
        x = [
            rng.integers(10000, size=(n, 10)).astype("float32"),
            rng.integers(10000, size=(n, 100)).astype("float32"),
            rng.integers(2, size=(n, 12)).astype("float32"),
        ]
        y = {
            "priority": rng.random(size=(n, 1)).astype("float32"),
            "department": rng.integers(2, size=(n, 4)).astype("float32"),
        }
        return x, y
    if family == "keras_timeseries_conv":
        return rng.normal(size=(n, 500, 1)).astype("float32"), rng.integers(2, size=n)
    if family == "keras_bidirectional_imdb":
        return rng.integers(20000, size=(n, 200)).astype("int32"), rng.integers(2, size=n)
    images = rng.random(size=(n, 28, 28, 1)).astype("float32")
    return images, images


def _build(name: str):
    import keras

    family, _, input_shape, vocabulary, classes = ZOO[name]
    large = not name.endswith("_small")
    inputs = keras.Input(input_shape, dtype="int32" if vocabulary else "float32")
    layers = keras.layers
    if family == "conv":
        widths = (32, 32, 64, 64) if large else (16, 16, 32, 32)
        x = inputs
        for index, width in enumerate(widths):
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            if index % 2 == 1:
                x = layers.MaxPooling2D(2)(x)
        x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    elif family == "embedding":
        x = layers.Embedding(vocabulary, 64 if large else 32)(inputs)
        x = layers.Dense(64, activation="relu")(layers.GlobalAveragePooling1D()(x))
    elif family == "transformer":
        width = 64 if large else 32
        x = layers.Embedding(vocabulary, width)(inputs)
        attended = layers.MultiHeadAttention(4, width // 4)(x, x)
        x = layers.LayerNormalization()(layers.Add()([x, attended]))
        hidden = layers.Dense(width * 2, activation="relu")(x)
        x = layers.LayerNormalization()(layers.Add()([x, layers.Dense(width)(hidden)]))
        x = layers.GlobalAveragePooling1D()(x)
    elif family == "separable":
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = layers.SeparableConv2D(32 if large else 24, 3, padding="same", activation="relu")(x)
        x = layers.SeparableConv2D(64 if large else 32, 3, strides=2, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
    elif family == "lstm":
        x = layers.LSTM(64 if large else 32)(inputs)
    elif family == "gru":
        x = layers.GRU(64 if large else 32)(inputs)
    elif family == "simple_rnn":
        x = layers.SimpleRNN(64 if large else 32)(inputs)
    elif family == "conv1d":
        x = layers.Conv1D(32 if large else 16, 5, padding="same", activation="relu")(inputs)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Conv1D(64 if large else 32, 5, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling1D()(x)
    elif family == "conv3d":
        x = layers.Conv3D(16 if large else 8, 3, padding="same", activation="relu")(inputs)
        x = layers.MaxPooling3D(2)(x)
        x = layers.Conv3D(32 if large else 16, 3, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling3D()(x)
    elif family == "conv_transpose":
        x = layers.Conv2DTranspose(16 if large else 8, 3, strides=2, padding="same")(inputs)
        x = layers.Conv2D(16 if large else 8, 3, strides=2, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
    elif family == "group_norm":
        x = layers.Conv2D(32 if large else 16, 3, padding="same")(inputs)
        x = layers.Activation("relu")(layers.GroupNormalization(8 if large else 4)(x))
        x = layers.Conv2D(32 if large else 16, 3, strides=2, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
    elif family == "residual_transformer":
        x = layers.Embedding(vocabulary, 64)(inputs)
        x = keras.ops.mean(_encoder_block(x, 64), axis=1)
    elif family == "custom_layer":
        token_and_position, _ = _real_code_classes()
        x = token_and_position(vocabulary, input_shape[0], 64)(inputs)
        x = keras.ops.mean(_encoder_block(x, 64), axis=1)
    elif family == "subclassed":
        _, residual_regressor = _real_code_classes()
        model = residual_regressor(64)
        model(keras.ops.zeros((1, *input_shape)))
        return model, "mse"
    elif family == "bidirectional":
        x = layers.Bidirectional(layers.LSTM(32))(inputs)
    elif family == "time_distributed":
        x = layers.TimeDistributed(layers.Dense(64, activation="relu"))(inputs)
        x = layers.GlobalAveragePooling1D()(x)
    elif family == "siamese":
        image = keras.Input(input_shape[1:])
        t = layers.GroupNormalization(1)(image)  # what replace_batch_norm makes of BatchNorm
        t = layers.AveragePooling2D(2)(layers.Conv2D(4, 5, activation="tanh")(t))
        t = layers.AveragePooling2D(2)(layers.Conv2D(16, 5, activation="tanh")(t))
        t = layers.Dense(10, activation="tanh")(layers.GroupNormalization(1)(layers.Flatten()(t)))
        tower = keras.Model(image, t)
        squared = keras.ops.square(tower(inputs[:, 0]) - tower(inputs[:, 1]))
        squared = keras.ops.sum(squared, axis=1, keepdims=True)
        x = keras.ops.sqrt(keras.ops.maximum(squared, keras.backend.epsilon()))
    else:
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(inputs)
        x = layers.DepthwiseConv2D(3, strides=2, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes)(x)
    loss = "mse" if classes == 1 else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.Model(inputs, outputs), loss


def _compiled(name: str, kind: str):
    import keras

    import pydp_r

    keras.utils.set_random_seed(0)
    family = ZOO[name][0]
    if family.startswith("keras_"):
        model, compile_arguments = _keras_example(family)
    else:
        model, loss = _build(name)
        compile_arguments = {"loss": loss}
    if kind == "plain":
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        optimizer = pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=1.1, learning_rate=1e-3)
    model.compile(optimizer=optimizer, **compile_arguments)
    return model


def _data(name: str, steps: int):
    import numpy as np

    family, batch_size, input_shape, vocabulary, classes = ZOO[name]
    if family.startswith("keras_"):
        return _example_data(family, batch_size * steps)
    rng = np.random.default_rng(0)
    shape = (batch_size * steps, *input_shape)
    if vocabulary:
        x = rng.integers(0, vocabulary, size=shape).astype("int32")
    else:
        x = rng.normal(size=shape).astype("float32")
    if classes == 1:
        y = rng.normal(size=(batch_size * steps, 1)).astype("float32")
    else:
        y = rng.integers(0, classes, size=batch_size * steps)
    return x, y


def _rows(arrays, stop: int):
    """The first `stop` rows of an array, or of each array of a list or dict (several inputs
    or outputs)."""
    import keras

    return keras.tree.map_structure(lambda array: array[:stop], arrays)


def time_interleaved(
    name: str, steps: int, repeats: int, general: bool = False
) -> dict[str, float | str]:
    """Per-step seconds (medians over rounds), the median ratio, first-trace seconds, path.

    With `general`, DP takes the general path whatever the model (how models the fast path
    declined were trained before they were proven per-example).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from pydp_r.step import fast_clipping

    if general:
        fast_clipping.takes_fast_path = lambda *args, **kwargs: False
    batch_size = ZOO[name][1]
    x, y = _data(name, steps)
    models = {kind: _compiled(name, kind) for kind in ("plain", "dp")}
    reason = "forced" if general else fast_clipping.unsupported_reason(models["dp"], _rows(x, 1))
    start = time.perf_counter()
    models["dp"].fit(_rows(x, batch_size), _rows(y, batch_size), batch_size=batch_size, verbose=0)
    first_trace = time.perf_counter() - start
    for model in models.values():
        warm = batch_size * 2
        model.fit(_rows(x, warm), _rows(y, warm), batch_size=batch_size, epochs=2, verbose=0)
    seconds: dict[str, list[float]] = {kind: [] for kind in models}
    cpu_seconds: dict[str, list[float]] = {kind: [] for kind in models}
    for round_index in range(repeats):
        kinds = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for kind in kinds:
            start, cpu_start = time.perf_counter(), time.process_time()
            models[kind].fit(x, y, batch_size=batch_size, verbose=0, shuffle=False)
            seconds[kind].append((time.perf_counter() - start) / steps)
            cpu_seconds[kind].append(time.process_time() - cpu_start)
    ratios = np.array(seconds["dp"]) / np.array(seconds["plain"])
    cpu_ratios = np.array(cpu_seconds["dp"]) / np.array(cpu_seconds["plain"])
    return {
        "plain": float(np.median(seconds["plain"])),
        "dp": float(np.median(seconds["dp"])),
        "ratio": float(np.median(ratios)),
        "ratio_min": float(np.min(ratios)),
        "ratio_max": float(np.max(ratios)),
        "cpu_ratio": float(np.median(cpu_ratios)),
        "first_trace": first_trace,
        "path": "fast" if reason is None else "general",
    }


def peak_memory(name: str, kind: str) -> float:
    """Peak resident set size (MiB) of this process after a short run of one configuration."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = _compiled(name, kind)
    x, y = _data(name, 3)
    model.fit(x, y, batch_size=ZOO[name][1], epochs=2, verbose=0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_subprocess(*arguments: str) -> object:
    command = [sys.executable, __file__, *arguments]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--general", action="store_true", help="DP on the general path (the 'before' column)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--timing", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timing:
        print(json.dumps(time_interleaved(args.timing, args.steps, args.repeats, args.general)))
        return 0
    if args.memory:
        print(json.dumps(peak_memory(*args.memory)))
        return 0

    print(
        f"| {'model':17} | batch | path    | plain ms | DP ms  | ratio | spread    | cpu ratio "
        "| first trace s | plain MiB | DP MiB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        timing = _in_subprocess(
            "--timing",
            name,
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
            *(["--general"] if args.general else []),
        )
        if args.no_memory:
            memory = {"plain": float("nan"), "dp": float("nan")}
        else:
            memory = {kind: _in_subprocess("--memory", name, kind) for kind in ("plain", "dp")}
        cells = [
            f"{name:17}",
            f"{ZOO[name][1]:>5}",
            f"{timing['path']:7}",
            f"{timing['plain'] * 1e3:>8.1f}",
            f"{timing['dp'] * 1e3:>6.1f}",
            f"{timing['ratio']:>5.2f}",
            f"{timing['ratio_min']:.2f}-{timing['ratio_max']:.2f}",
            f"{timing['cpu_ratio']:>9.2f}",
            f"{timing['first_trace']:>13.1f}",
            f"{memory['plain']:>9.0f}",
            f"{memory['dp']:>6.0f}",
            f"{memory['dp'] / memory['plain']:>12.2f}",
        ]
        print(
            "| " + " | ".join(cells) + " |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
