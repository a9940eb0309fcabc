"""DP optimizers in fit(): the update is clipped-and-noised DP-SGD, and misuse is refused."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import pydp_r


def conv_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((10, 3)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


def regression_data(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 3)).astype("float32")
    # Very different target scales give very different per-example gradient norms.
    y = (rng.normal(size=(n, 1)) * np.linspace(0.1, 30, n)[:, None]).astype("float32")
    return x, y


def per_example_gradients(model, x, y, sample_weight=None, units=None):
    """Gradients of each unit's mean MSE, one GradientTape per unit (the reference)."""
    units = units or len(x)
    chunks = zip(
        np.split(x, units),
        np.split(y, units),
        np.split(sample_weight if sample_weight is not None else np.ones(len(x)), units),
        strict=True,
    )
    gradients = []
    for x_unit, y_unit, w_unit in chunks:
        with tf.GradientTape() as tape:
            errors = tf.reduce_mean(tf.square(model(x_unit, training=True) - y_unit), axis=-1)
            loss = tf.reduce_sum(errors * w_unit) / len(x_unit)
        gradients.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    return gradients


def clipped_mean(gradients, clip):
    total = [np.zeros_like(g) for g in gradients[0]]
    for unit in gradients:
        norm = np.sqrt(sum(float(np.sum(g**2)) for g in unit))
        factor = min(1.0, clip / max(norm, 1e-12))
        total = [t + factor * g for t, g in zip(total, unit, strict=True)]
    return [t / len(gradients) for t in total]


def norms_of(gradients):
    return np.array([np.sqrt(sum(float(np.sum(g**2)) for g in unit)) for unit in gradients])


def one_step_update(model, optimizer, x, y, **fit_kwargs):
    before = [w.numpy().copy() for w in model.trainable_variables]
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0, **fit_kwargs)
    return [w.numpy() - b for w, b in zip(model.trainable_variables, before, strict=True)]


def test_noiseless_update_is_minus_lr_times_mean_of_clipped_per_example_gradients():
    x, y = regression_data()
    model = conv_model()
    reference = per_example_gradients(model, x, y)
    norms = norms_of(reference)
    clip = float(np.median(norms))
    assert (norms > clip * 1.05).any() and (norms < clip * 0.95).any()
    expected = clipped_mean(reference, clip)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(l2_norm_clip=clip, noise_multiplier=0.0, learning_rate=0.5)
    update = one_step_update(model, optimizer, x, y)
    for got, want in zip(update, expected, strict=True):
        np.testing.assert_allclose(got, -0.5 * want, rtol=2e-4, atol=1e-6)


def test_microbatches_clip_microbatch_mean_gradients():
    x, y = regression_data()
    model = conv_model()
    clip = 0.5
    expected = clipped_mean(per_example_gradients(model, x, y, units=2), clip)
    per_example = clipped_mean(per_example_gradients(model, x, y), clip)
    assert not np.allclose(expected[0], per_example[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(clip, 0.0, num_microbatches=2, learning_rate=1.0)
    update = one_step_update(model, optimizer, x, y)
    for got, want in zip(update, expected, strict=True):
        np.testing.assert_allclose(got, -want, rtol=2e-4, atol=1e-6)


def test_sample_weights_scale_each_example_loss_before_clipping():
    x, y = regression_data()
    weights = np.linspace(0.0, 2.0, len(x)).astype("float32")
    model = conv_model()
    clip = 2.0
    expected = clipped_mean(per_example_gradients(model, x, y, sample_weight=weights), clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(clip, 0.0, learning_rate=1.0)
    update = one_step_update(model, optimizer, x, y, sample_weight=weights)
    for got, want in zip(update, expected, strict=True):
        np.testing.assert_allclose(got, -want, rtol=2e-4, atol=1e-6)


def wide_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((200,)), keras.layers.Dense(100), keras.layers.Dense(1)])


def noise_of_update(batch_size, noise_multiplier, clip, accumulation=1, steps=1):
    """Update of a noisy run minus that of a noiseless run from the same weights and batches."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(batch_size * steps, 200)).astype("float32")
    y = rng.normal(size=(batch_size * steps, 1)).astype("float32")
    updates = []
    for sigma in (noise_multiplier, 0.0):
        model = wide_model(seed=1)
        before = [w.numpy().copy() for w in model.trainable_variables]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
            optimizer = pydp_r.DPSGD(
                clip, sigma, gradient_accumulation_steps=accumulation, learning_rate=1.0
            )
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        flat = np.concatenate(
            [
                (w.numpy() - b).ravel()
                for w, b in zip(model.trainable_variables, before, strict=True)
            ]
        )
        updates.append(flat)
    return updates[0] - updates[1]


def test_noise_std_of_the_update_is_noise_multiplier_times_clip_over_batch():
    noise = noise_of_update(batch_size=8, noise_multiplier=2.0, clip=0.5)
    assert noise.size > 20000
    expected_std = 2.0 * 0.5 / 8
    assert np.std(noise) == pytest.approx(expected_std, rel=0.03)
    assert abs(np.mean(noise)) < 0.03 * expected_std


def test_gradient_accumulation_adds_noise_once_per_logical_batch():
    noise = noise_of_update(batch_size=4, noise_multiplier=2.0, clip=0.5, accumulation=2, steps=2)
    # One logical batch of 8 examples: noise std sigma * C / 8, not sqrt(2) times that.
    assert np.std(noise) == pytest.approx(2.0 * 0.5 / 8, rel=0.03)


def test_gradient_accumulation_waits_for_the_logical_batch_before_updating():
    x, y = regression_data()
    model = conv_model()
    before = [w.numpy().copy() for w in model.trainable_variables]
    model.compile(
        optimizer=pydp_r.DPAdam(1.0, 1.0, gradient_accumulation_steps=3, learning_rate=0.1),
        loss="mse",
    )
    model.fit(x[:4], y[:4], batch_size=2, epochs=1, verbose=0)  # two steps of three
    for w, b in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


@pytest.mark.parametrize(
    "optimizer_class", [pydp_r.DPSGD, pydp_r.DPAdam, pydp_r.DPAdagrad, pydp_r.DPRMSprop]
)
def test_every_dp_optimizer_trains_a_small_regression(optimizer_class):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]])).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    learning_rate = {pydp_r.DPAdagrad: 0.5}.get(optimizer_class, 0.05)
    model.compile(
        optimizer=optimizer_class(
            l2_norm_clip=5.0, noise_multiplier=0.3, learning_rate=learning_rate
        ),
        loss="mse",
        metrics=["mae"],
    )
    initial_loss = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, validation_data=(x[:32], y[:32]))
    assert history.history["loss"][-1] < 0.5 * initial_loss
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history.history)


def test_functional_multi_input_model_with_tf_data_and_loss_object():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 3)).astype("float32")
    b = rng.normal(size=(8, 2)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 5
    keras.utils.set_random_seed(2)
    input_a, input_b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="relu")(
        keras.layers.Concatenate()([input_a, input_b])
    )
    model = keras.Model([input_a, input_b], keras.layers.Dense(1)(hidden))

    reference = []
    for i in range(8):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model([a[i : i + 1], b[i : i + 1]]) - y[i : i + 1]))
        reference.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    expected = clipped_mean(reference, 1.0)

    before = [w.numpy().copy() for w in model.trainable_variables]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(1.0, 0.0, learning_rate=1.0)
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
    dataset = tf.data.Dataset.from_tensor_slices(((a, b), y)).batch(8)
    model.fit(dataset, epochs=1, verbose=0)
    for w, old, want in zip(model.trainable_variables, before, expected, strict=True):
        np.testing.assert_allclose(w.numpy() - old, -want, rtol=2e-4, atol=1e-6)


class SubclassedRegressor(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_subclassed_model_without_train_step_trains_privately():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    model = SubclassedRegressor()
    model.compile(optimizer=pydp_r.DPAdam(1.0, 0.5, learning_rate=0.05), loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_multi_output_model_keeps_per_output_loss_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(
        inputs,
        {
            "p": keras.layers.Dense(1, name="p")(inputs),
            "q": keras.layers.Dense(2, name="q")(inputs),
        },
    )
    model.compile(optimizer=pydp_r.DPSGD(1.0, 0.5), loss={"p": "mse", "q": "mae"})
    history = model.fit(x, {"p": x[:, :1], "q": x[:, 1:]}, batch_size=8, epochs=1, verbose=0)
    assert {"loss", "p_loss", "q_loss"} <= set(history.history)
    assert all(np.isfinite(v[0]) for v in history.history.values())


class ManualStepModel(keras.Model):
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return {"loss": loss}


def test_custom_train_step_with_aggregated_gradients_is_refused():
    inputs = keras.Input((3,))
    model = ManualStepModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=pydp_r.DPAdam(1.0, 1.0))
    with pytest.raises(RuntimeError, match="compute_dp_gradients"):
        model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)


def test_plain_apply_gradients_is_refused():
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = pydp_r.DPSGD(1.0, 1.0)
    with pytest.raises(RuntimeError, match="aggregated gradients"):
        optimizer.apply_gradients([(tf.ones(3), variable)])
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))


def test_compute_dp_gradients_in_a_custom_loop_matches_the_reference():
    x, y = regression_data()
    model = conv_model()
    expected = clipped_mean(per_example_gradients(model, x, y), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(1.0, 0.0, learning_rate=1.0)

    def loss_fn(batch):
        features, targets = batch
        return tf.reduce_mean(tf.square(model(features, training=True) - targets))

    gradients = optimizer.compute_dp_gradients(loss_fn, (x, y), model.trainable_variables)
    for got, want in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-4, atol=1e-6)
    before = [w.numpy().copy() for w in model.trainable_variables]
    optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    assert not np.allclose(model.trainable_variables[0].numpy(), before[0])


def test_batch_not_divisible_by_microbatches_is_padded_not_refused():
    # A partial last batch (6 of 4 microbatches) is padded with zero-weight rows to 8.
    x, y = regression_data(n=6)
    model = conv_model()
    model.compile(optimizer=pydp_r.DPSGD(1.0, 1.0, num_microbatches=4), loss="mse")
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations) == 1


def test_zero_noise_warns_that_there_is_no_privacy():
    with pytest.warns(pydp_r.NoPrivacyWarning, match="NO differential privacy"):
        pydp_r.DPAdam(l2_norm_clip=1.0, noise_multiplier=0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"l2_norm_clip": 0.0, "noise_multiplier": 1.0}, "l2_norm_clip"),
        ({"l2_norm_clip": -1.0, "noise_multiplier": 1.0}, "l2_norm_clip"),
        ({"l2_norm_clip": float("nan"), "noise_multiplier": 1.0}, "l2_norm_clip"),
        ({"l2_norm_clip": "one", "noise_multiplier": 1.0}, "l2_norm_clip"),
        ({"l2_norm_clip": 1.0, "noise_multiplier": -0.1}, "noise_multiplier"),
        ({"l2_norm_clip": 1.0, "noise_multiplier": float("inf")}, "noise_multiplier"),
        ({"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "num_microbatches": 0}, "num_microbatches"),
        (
            {"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "num_microbatches": 2.5},
            "num_microbatches",
        ),
        (
            {"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "gradient_accumulation_steps": 0},
            "gradient_accumulation_steps",
        ),
    ],
)
def test_bad_arguments_name_the_argument_and_range(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pydp_r.DPAdam(**kwargs)


def test_tf_privacy_aliases_take_its_argument_order():
    optimizer = pydp_r.DPKerasAdamOptimizer(1.5, 0.7, 4, 1, 0.01)
    assert (optimizer.l2_norm_clip, optimizer.noise_multiplier, optimizer.num_microbatches) == (
        1.5,
        0.7,
        4,
    )
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert isinstance(optimizer, keras.optimizers.Adam)


def test_default_names_follow_keras_names():
    names = [cls(1.0, 1.0).name for cls in (pydp_r.DPSGD, pydp_r.DPAdam, pydp_r.DPRMSprop)]
    assert names == ["dp_sgd", "dp_adam", "dp_rmsprop"]
    assert pydp_r.DPAdam(1.0, 1.0, name="mine").name == "mine"


def test_make_dp_optimizer_class_wraps_any_keras_optimizer():
    dp_lion = pydp_r.make_dp_optimizer_class(keras.optimizers.Lion)
    optimizer = dp_lion(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=1e-3)
    assert isinstance(optimizer, keras.optimizers.Lion)
    assert isinstance(optimizer, pydp_r.DPOptimizerMixin)
    with pytest.raises(ValueError, match="keras_optimizer_class"):
        pydp_r.make_dp_optimizer_class(int)
    with pytest.raises(ValueError, match="already DP"):
        pydp_r.make_dp_optimizer_class(pydp_r.DPAdam)


def test_config_round_trip_keeps_dp_arguments():
    optimizer = pydp_r.DPRMSprop(
        1.3, 0.9, num_microbatches=2, gradient_accumulation_steps=3, rho=0.8
    )
    restored = pydp_r.DPRMSprop.from_config(optimizer.get_config())
    assert (restored.l2_norm_clip, restored.noise_multiplier, restored.num_microbatches) == (
        1.3,
        0.9,
        2,
    )
    assert restored.gradient_accumulation_steps == 3 and restored.rho == pytest.approx(0.8)


def test_model_save_and_load_keep_the_dp_optimizer(tmp_path):
    x, y = regression_data(16)
    model = conv_model()
    model.compile(optimizer=pydp_r.DPAdam(1.1, 0.8, learning_rate=0.01), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is pydp_r.DPAdam
    assert (loaded.optimizer.l2_norm_clip, loaded.optimizer.noise_multiplier) == (1.1, 0.8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 4


def noisy_update(noise_seed=None):
    """The first update of a fresh model after `keras.utils.set_random_seed(0)`."""
    keras.utils.set_random_seed(0)
    x, y = regression_data()
    model = conv_model()
    optimizer = pydp_r.DPSGD(1.0, 1.0, learning_rate=1.0, noise_seed=noise_seed)
    return one_step_update(model, optimizer, x, y)


def test_noise_is_not_predictable_from_keras_seed():
    # Same Keras seed, same data, same model: the noise must still differ between runs,
    # or whoever knows the seed could subtract it.
    first, second = noisy_update(), noisy_update()
    assert not all(np.allclose(a, b) for a, b in zip(first, second, strict=True))


def test_noise_seed_makes_noise_reproducible_and_is_the_only_key_saved():
    first, second = noisy_update(noise_seed=7), noisy_update(noise_seed=7)
    assert all(np.allclose(a, b) for a, b in zip(first, second, strict=True))
    assert "noise_seed" not in pydp_r.DPSGD(1.0, 1.0).get_config()
    assert pydp_r.DPSGD(1.0, 1.0, noise_seed=7).get_config()["noise_seed"] == 7


def test_repeated_draws_at_one_step_get_fresh_noise():
    # Custom loops may compute private gradients twice before applying: the noise must differ,
    # or the difference of the two releases would cancel it.
    x, y = regression_data()
    model = conv_model()
    optimizer = pydp_r.DPSGD(1.0, 1.0)

    def loss_fn(batch):
        return keras.losses.mean_squared_error(batch[1], model(batch[0]))

    first = optimizer.compute_dp_gradients(loss_fn, (x, y), model.trainable_variables)
    second = optimizer.compute_dp_gradients(loss_fn, (x, y), model.trainable_variables)
    assert not np.allclose(first[0].numpy(), second[0].numpy())


def trained_dense_model():
    x, y = regression_data(16)
    model = keras.Sequential([keras.Input((10, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=pydp_r.DPAdam(1.0, 1.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model, x


def saved_int64_values(reader_path):
    """Every int64 tensor stored in a TF checkpoint (what could hold a Philox key)."""
    reader = tf.train.load_checkpoint(reader_path)
    types = reader.get_variable_to_dtype_map()
    return {name: reader.get_tensor(name) for name, dtype in types.items() if dtype == tf.int64}


def test_no_tensorflow_or_keras_save_format_stores_the_noise_key(tmp_path):
    model, x = trained_dense_model()
    state = model.optimizer._local.noise_generator.state.numpy()
    key = state[-1]  # Philox: [counter, counter, key]
    checkpoint = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt" / "c"))
    tf.saved_model.save(model, str(tmp_path / "saved"))
    model.export(str(tmp_path / "exported"))
    stored = {
        "tf.train.Checkpoint": saved_int64_values(checkpoint),
        "tf.saved_model.save": saved_int64_values(str(tmp_path / "saved/variables/variables")),
        "model.export": saved_int64_values(str(tmp_path / "exported/variables/variables")),
    }
    for where, values in stored.items():
        assert not any("noise" in name for name in values), where
        assert not any(np.isin(key, np.ravel(value)).any() for value in values.values()), where
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    import zipfile

    import h5py

    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        config = archive.read("config.json").decode()
        assert "noise_generator" not in config and "noise_seed" not in config
        archive.extract("model.weights.h5", tmp_path / "unzipped")
    for path in (tmp_path / "unzipped/model.weights.h5", tmp_path / "model.weights.h5"):
        with h5py.File(path) as weights:
            arrays = []
            weights.visititems(
                lambda name, item, found=arrays: (
                    found.append(item[()]) if hasattr(item, "dtype") else None
                )
            )
        assert not any(np.isin(key, np.ravel(a)).any() for a in arrays if a.dtype.kind in "iu")


def test_steps_outside_fit_are_in_the_ledger():
    x, y = regression_data(16)
    model = conv_model()
    model.compile(optimizer=pydp_r.DPSGD(1.0, 1.1), loss="mse")
    for _ in range(10):
        model.train_on_batch(x[:8], y[:8])
    ledger = model.optimizer.privacy_ledger
    assert ledger.steps == 10 and ledger.segments[0].sampling == "unattributed"

    def loss_fn(batch):
        return keras.losses.mean_squared_error(batch[1], model(batch[0]))

    optimizer = model.optimizer
    for _ in range(3):  # a custom loop
        gradients = optimizer.compute_dp_gradients(loss_fn, (x, y), model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    optimizer.compute_dp_gradients(loss_fn, (x, y), model.trainable_variables)  # never applied
    assert optimizer.privacy_ledger.steps == 14  # a release counts whether applied or not
    assert optimizer.privacy_ledger.epsilon(1e-5) > 0


def test_apply_takes_only_the_gradients_compute_dp_gradients_returned():
    x, y = regression_data()
    model = conv_model()
    optimizer = pydp_r.DPSGD(1.0, 1.0)
    model.compile(optimizer=optimizer, loss="mse")

    def loss_fn(batch):
        return keras.losses.mean_squared_error(batch[1], model(batch[0]))

    variables = model.trainable_variables
    private = optimizer.compute_dp_gradients(loss_fn, (x, y), variables)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn((x, y)))
    raw = tape.gradient(loss, variables)
    with pytest.raises(RuntimeError, match="not the ones its last compute_dp_gradients"):
        optimizer.apply_gradients(zip(raw, variables, strict=True))
    # Refused once, the private ones are gone too: compute again to apply.
    with pytest.raises(RuntimeError):
        optimizer.apply_gradients(zip(private, variables, strict=True))


def test_noise_seeds_are_used_exactly():
    first = pydp_r.DPSGD(1.0, 1.0, noise_seed=2**60)
    second = pydp_r.DPSGD(1.0, 1.0, noise_seed=2**60 + 1)
    assert first.noise_seed != second.noise_seed
    assert not np.allclose(
        first._local.noise_generator.normal([4]).numpy(),
        second._local.noise_generator.normal([4]).numpy(),
    )


def test_a_noise_multiplier_beyond_the_accounted_range_is_refused():
    with pytest.raises(ValueError, match=r"noise_multiplier must be a number in \[0, 10000\]"):
        pydp_r.DPAdam(1.0, 1e5)
    assert pydp_r.DPAdam(1.0, 1e4).noise_multiplier == 1e4


def test_an_example_with_nan_or_inf_contributes_nothing():
    x, y = regression_data(8)
    x[2, 0, 0] = np.nan
    y[5, 0] = np.inf
    model = conv_model()
    clean = conv_model()
    clean.set_weights(model.get_weights())
    keep = np.array([i not in (2, 5) for i in range(8)])
    update = one_step_update(model, pydp_r.DPSGD(1.0, 0.0, learning_rate=1.0), x, y)
    assert all(np.isfinite(u).all() for u in update)
    # The same as the six clean examples with the other two's weight 0 (mean over 8 rows).
    weights = keep.astype("float32")
    reference = clipped_mean(
        per_example_gradients(
            clean, np.where(keep[:, None, None], x, 0), np.where(keep[:, None], y, 0), weights
        ),
        1.0,
    )
    for got, want in zip(update, reference, strict=True):
        np.testing.assert_allclose(got, -want, rtol=1e-4, atol=1e-6)
    assert model.optimizer.non_finite_examples == 2


@pytest.mark.parametrize(
    "malformed",
    [tf.constant(0.5), [tf.constant(0.5)], tf.Variable([0.0]), []],
    ids=["scalar", "list-without-variables", "variable", "empty"],
)
def test_malformed_apply_gradients_gets_the_dp_refusal(malformed):
    optimizer = pydp_r.DPSGD(1.0, 1.0)
    with pytest.raises(RuntimeError, match="aggregated gradients"):
        optimizer.apply_gradients(malformed)


def test_a_copied_optimizer_draws_its_own_noise():
    import copy
    import pickle

    optimizer = pydp_r.DPSGD(1.0, 1.0)
    for copied in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer._local))):
        local = getattr(copied, "_local", copied)
        assert not np.allclose(
            local.noise_generator.state.numpy(), optimizer._local.noise_generator.state.numpy()
        )
    assert b"noise_generator" not in pickle.dumps(optimizer._local)


def noise_parts(shapes, seed=3):
    """The noise `private_gradients` adds to zero sums of these shapes (std 1, one unit)."""
    optimizer = pydp_r.DPSGD(1.0, 1.0, noise_seed=seed)
    zeros = [tf.zeros(shape) for shape in shapes]
    return [g.numpy() for g in optimizer._noised_average(zeros, tf.constant(1.0))]


def test_noise_is_standard_normal_in_its_body_and_tails():
    from scipy import stats

    (noise,) = noise_parts([(400_001,)])  # an odd size: the last pair is cut
    assert noise.shape == (400_001,)
    assert stats.kstest(noise, "norm").pvalue > 1e-3
    # Tail masses against N(0, 1), within 5 binomial standard deviations.
    for bound in (2.0, 3.0, 4.0):
        expected = 2 * stats.norm.sf(bound)
        observed = np.mean(np.abs(noise) > bound)
        assert abs(observed - expected) < 5 * np.sqrt(expected / noise.size) + 1e-6


def test_noise_parts_of_the_variables_are_independent():
    # One draw is split over the variables: equal-shaped ones must not get the same part, nor
    # parts correlated with each other.
    first, second, third = noise_parts([(100, 100), (100, 100), (7,)])
    assert third.shape == (7,)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.05
    assert np.std(first) == pytest.approx(1.0, rel=0.05)
    assert np.std(second) == pytest.approx(1.0, rel=0.05)


def test_box_muller_radius_reaches_the_tails_and_never_log_of_zero():
    from pydp_r import optimizers

    words = tf.constant([0, 2**31, 2**32 - 1], tf.uint32)
    radius, angle = optimizers._box_muller_polar(words, words)
    radius, angle = radius.numpy(), angle.numpy()
    # Smallest uniform 2^-33: radius sqrt(66 ln 2); the largest uniform rounds to 1: radius 0.
    assert radius[0] == pytest.approx(np.sqrt(66 * np.log(2)), rel=1e-5)
    assert radius[1] == pytest.approx(np.sqrt(2 * np.log(2)), rel=1e-5)
    assert radius[2] == 0.0
    assert angle[0] == 0.0 and angle[1] == pytest.approx(np.pi, rel=1e-6)
