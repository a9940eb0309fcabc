"""pydp_r.tensorflow_privacy: TF Privacy client code runs after renaming the package.

The client code here is written in TF Privacy's style (its import paths, signatures and calls);
the expected epsilons are the values TF Privacy's own tests assert (compute_dp_sgd_privacy_test
of TF Privacy 0.9.0, and for the two values the dp_accounting >= 0.4.4 series fix moved, the
values TF Privacy updated its test to in April 2024).
"""

import math
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import pydp_r
from pydp_r import tensorflow_privacy
from pydp_r.tensorflow_privacy import NotSupportedOnKeras3Error
from pydp_r.tensorflow_privacy.privacy.analysis import (
    compute_dp_sgd_privacy,
    compute_dp_sgd_privacy_lib,
)
from pydp_r.tensorflow_privacy.privacy.analysis.compute_noise_from_budget_lib import compute_noise

_RDP = compute_dp_sgd_privacy_lib.AccountantType.RDP
_PLD = compute_dp_sgd_privacy_lib.AccountantType.PLD
_example_privacy = compute_dp_sgd_privacy_lib._compute_dp_sgd_example_privacy
_user_privacy = compute_dp_sgd_privacy_lib._compute_dp_sgd_user_privacy

# TF Privacy's statement test set-up.
STATEMENT_KWARGS = dict(
    number_of_examples=10000, batch_size=64, num_epochs=5.0, noise_multiplier=2.0, delta=1e-6
)


def statement_epsilons(statement: str) -> list[float]:
    """The epsilon cells of a statement, in order (inf for 'inf (**)')."""
    cells = re.findall(r"^    .*:\s+(inf \(\*\*\)|\d+\.\d{3})$", statement, flags=re.MULTILINE)
    return [math.inf if cell.startswith("inf") else float(cell) for cell in cells]


# --- accounting: TF Privacy's numbers -------------------------------------------------------


@pytest.mark.parametrize(
    "used_microbatching, sampling_probability, accountant, tf_privacy_epsilon",
    [
        (False, None, _RDP, 10.8602036),
        (True, None, _RDP, 26.2880374),
        (False, 1e-2, _RDP, 3.2392676),  # 3.2391922 with dp_accounting 0.4.3
        (True, 1e-2, _RDP, 22.6248601),  # 22.5970358 with dp_accounting 0.4.3
        (False, None, _PLD, 10.1224946),
        (True, None, _PLD, 24.7160779),
        (False, 1e-2, _PLD, 2.4612381),
        (True, 1e-2, _PLD, 18.6977407),
    ],
)
def test_example_epsilon_equals_tf_privacy(
    used_microbatching, sampling_probability, accountant, tf_privacy_epsilon
):
    epsilon = _example_privacy(1.2, 0.7, 1e-5, used_microbatching, sampling_probability, accountant)
    assert epsilon == pytest.approx(tf_privacy_epsilon, abs=5e-8)


@pytest.mark.parametrize(
    "n, batch_size, noise_multiplier, epochs, delta, tf_privacy_epsilon, tf_privacy_order",
    [
        (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19.0),
        (100000, 100, 1.0, 30, 1e-7, 1.4154988495444845, 13.0),
        (100000000, 1024, 0.1, 10, 1e-7, 5907982.31138195, 1.25),
    ],
)
def test_classic_compute_dp_sgd_privacy_equals_tf_privacy(
    n, batch_size, noise_multiplier, epochs, delta, tf_privacy_epsilon, tf_privacy_order
):
    with pytest.warns(compute_dp_sgd_privacy_lib.ClassicEpsilonWarning, match="microbatching"):
        epsilon, order = tensorflow_privacy.compute_dp_sgd_privacy(
            n, batch_size, noise_multiplier, epochs, delta
        )
    assert epsilon == pytest.approx(tf_privacy_epsilon, rel=1e-9)
    assert order == tf_privacy_order


def test_notebook_calls_the_module_function_by_keyword():
    """The classification_privacy notebook: compute_dp_sgd_privacy.compute_dp_sgd_privacy(...)."""
    train_data = np.zeros((60000, 28, 28, 1), np.float32)
    with pytest.warns(compute_dp_sgd_privacy_lib.ClassicEpsilonWarning):
        result = compute_dp_sgd_privacy.compute_dp_sgd_privacy(
            n=train_data.shape[0], batch_size=250, noise_multiplier=1.3, epochs=15, delta=1e-5
        )
    assert result == pydp_r.compute_dp_sgd_privacy(60000, 250, 1.3, 15, 1e-5)
    assert 0 < result[0] < 2 and result[1] in pydp_r.accounting.CLASSIC_RDP_ORDERS


@pytest.mark.parametrize(
    "extra, accountant, tf_privacy_epsilons",
    [
        ({}, _RDP, [13.376, 1.616]),
        ({"max_examples_per_user": 3}, _RDP, [13.376, 1.616, 85.940, 6.425]),
        ({"max_examples_per_user": 10}, _RDP, [13.376, 1.616, math.inf, math.inf]),
        ({}, _PLD, [12.595, 1.199]),
        ({"max_examples_per_user": 3}, _PLD, [12.595, 1.199]),
    ],
)
def test_statement_epsilons_equal_tf_privacy(extra, accountant, tf_privacy_epsilons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the infinite user-level case warns
        statement = tensorflow_privacy.compute_dp_sgd_privacy_statement(
            **STATEMENT_KWARGS, **extra, accountant_type=accountant
        )
    assert statement_epsilons(statement) == tf_privacy_epsilons
    assert all(len(line) <= 80 for line in statement.splitlines())
    flat = " ".join(statement.split())
    for fact in ("10000 examples", "64 examples per step", "noise multiplier 2.0", "5.0 epochs",
                 "with microbatching", "delta = 1e-06", f"{accountant.value} accountant",
                 "every model checkpoint", "(*) Training pipelines rarely sample"):  # fmt: skip
        assert fact in flat
    assert ("(**)" in flat) == (math.inf in tf_privacy_epsilons)
    if accountant == _PLD and extra:
        assert "No user-level guarantee with the PLD accountant" in flat
    if not extra:
        assert "No user-level guarantee: it needs a bound" in flat


def test_statement_without_microbatching_uses_the_full_noise():
    statement = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy_statement(
        **STATEMENT_KWARGS, used_microbatching=False
    )
    assert "without microbatching" in " ".join(statement.split())
    poisson = _example_privacy(5.0, 2.0, 1e-6, False, 64 / 10000)
    assert statement_epsilons(statement)[1] == float(f"{poisson:.3f}")
    assert poisson < _example_privacy(5.0, 2.0, 1e-6, True, 64 / 10000)


def test_one_example_per_user_is_example_level():
    for accountant in (_RDP, _PLD):
        assert _user_privacy(1.2, 0.7, 1e-5, 1, accountant_type=accountant) == _example_privacy(
            1.2, 0.7, 1e-5, accountant_type=accountant
        )


@pytest.mark.parametrize("noise_multiplier, max_examples_per_user", [(0.9, 2), (1.1, 3), (2.3, 13)])
def test_user_epsilon_inverts_group_privacy(noise_multiplier, max_examples_per_user):
    """Vadhan 2017, Lemma 2.2: at the group delta of an example-level (eps, d), user eps = k eps."""
    example_epsilon = _example_privacy(5, noise_multiplier, 1e-8, True, 2e-4, _RDP)
    k = max_examples_per_user
    user_delta = 1e-8 * math.expm1(k * example_epsilon) / math.expm1(example_epsilon)
    user_epsilon = _user_privacy(5, noise_multiplier, user_delta, k, True, 2e-4, _RDP)
    assert user_epsilon == pytest.approx(k * example_epsilon, rel=1e-7)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: _example_privacy(-1.0, 1.0, 1e-5), "num_epochs"),
        (lambda: _example_privacy(1.0, -1.0, 1e-5), "noise_multiplier"),
        (lambda: _example_privacy(1.0, 1.0, 1.5), "example_delta"),
        (lambda: _user_privacy(1.0, 1.0, -0.5, 3), "user_delta"),
        (lambda: _user_privacy(1.0, 1.0, 1e-5, -1), "max_examples_per_user"),
        (
            lambda: compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy_statement(10, 11, 1, 1, 1e-5),
            "batch_size",
        ),
    ],
)
def test_bad_arguments_name_themselves(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_compute_noise_meets_the_target_and_inverts_the_classic_epsilon():
    with pytest.warns(compute_dp_sgd_privacy_lib.ClassicEpsilonWarning):
        epsilon, _ = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy(60000, 150, 1.3, 15, 1e-5)
    noise = compute_noise(60000, 150, epsilon, 15, 1e-5, 0.5)
    assert noise == pytest.approx(1.3, rel=1e-3)
    with pytest.warns(compute_dp_sgd_privacy_lib.ClassicEpsilonWarning):
        assert compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy(60000, 150, noise, 15, 1e-5)[
            0
        ] <= epsilon * (1 + 1e-9)
    assert compute_noise(60000, 150, epsilon, 15, 1e-5, 2.0) == 0  # lower end already too noisy


# --- import paths --------------------------------------------------------------------------

# TF Privacy 0.9.0's top-level names (its __init__.py).
TF_PRIVACY_TOP_LEVEL = """
v1 compute_dp_sgd_privacy compute_dp_sgd_privacy_statement compute_rdp_tree_restart
compute_rdp_single_tree compute_zcdp_single_tree DPQuery SumAggregationDPQuery
DiscreteGaussianSumQuery DistributedDiscreteGaussianSumQuery DistributedSkellamSumQuery
GaussianSumQuery NestedQuery NoPrivacyAverageQuery NoPrivacySumQuery NormalizedQuery
QuantileEstimatorQuery NoPrivacyQuantileEstimatorQuery QuantileAdaptiveClipSumQuery
QAdaClipTreeResSumQuery restart_query tree_aggregation RestartQuery TreeCumulativeSumQuery
TreeResidualSumQuery TreeRangeSumQuery DNNClassifier DPModel DPSequential make_dp_model_class
GenericDPAdagradOptimizer GenericDPAdamOptimizer GenericDPSGDOptimizer DPKerasAdagradOptimizer
DPFTRLTreeAggregationOptimizer DPKerasAdamOptimizer DPKerasSGDOptimizer
make_gaussian_query_optimizer_class make_keras_generic_optimizer_class make_keras_optimizer_class
VectorizedDPKerasAdagradOptimizer VectorizedDPKerasAdamOptimizer VectorizedDPKerasSGDOptimizer
make_vectorized_keras_optimizer_class linearly_separable_labeled_examples
synthetic_linearly_separable_data logistic_objective_perturbation logistic_dpsgd
single_layer_softmax_classifier
""".split()


@pytest.mark.parametrize("name", TF_PRIVACY_TOP_LEVEL)
def test_every_top_level_name_is_provided_or_refused_with_a_reason(name):
    try:
        value = getattr(tensorflow_privacy, name)
    except NotSupportedOnKeras3Error as error:
        assert "Use instead:" in str(error) and name in str(error)
        with pytest.raises(ImportError, match="not supported by pydp_r"):
            exec(f"from pydp_r.tensorflow_privacy import {name}", {})
    else:
        assert value is not None and not isinstance(value, str)


def test_supported_names_are_pydp_r_objects():
    from pydp_r.tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

    assert tensorflow_privacy.DPKerasSGDOptimizer is dp_optimizer_keras.DPKerasSGDOptimizer
    assert dp_optimizer_keras.DPKerasSGDOptimizer is pydp_r.DPSGD
    assert dp_optimizer_keras.DPKerasAdamOptimizer is pydp_r.DPAdam
    assert dp_optimizer_keras.DPKerasAdagradOptimizer is pydp_r.DPAdagrad
    assert tensorflow_privacy.make_keras_optimizer_class(keras.optimizers.SGD) is pydp_r.DPSGD
    lion = tensorflow_privacy.make_keras_optimizer_class(keras.optimizers.Lion)
    assert lion is tensorflow_privacy.make_keras_optimizer_class(keras.optimizers.Lion)
    assert issubclass(lion, pydp_r.DPOptimizerMixin) and issubclass(lion, keras.optimizers.Lion)
    assert tensorflow_privacy.compute_dp_sgd_privacy_statement is (
        compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy_statement
    )


@pytest.mark.parametrize(
    "statement, reason",
    [
        ("from pydp_r.tensorflow_privacy.privacy.dp_query import gaussian_query", "DPQuery"),
        ("from pydp_r.tensorflow_privacy.privacy.estimators.v1 import dnn", "tf.estimator"),
        ("import pydp_r.tensorflow_privacy.privacy.analysis.rdp_accountant", "dp_accounting"),
        ("from pydp_r.tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry",
         "ghost-norm"),
        ("from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer import "
         "DPRMSPropGaussianOptimizer", "accumulator at 1"),
        ("from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer import "
         "DPGradientDescentOptimizer", "tf.compat.v1"),
        ("from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import "
         "GenericDPSGDOptimizer", "DPQuery"),
        ("from pydp_r.tensorflow_privacy.v1 import DNNClassifierV1", "tf.estimator"),
        ("from pydp_r.tensorflow_privacy.privacy.privacy_tests.membership_inference_attack "
         "import membership_inference_attack", "pydp_r.audit"),
    ],
)  # fmt: skip
def test_unsupported_imports_say_why_and_what_instead(statement, reason):
    with pytest.raises(NotSupportedOnKeras3Error, match="Use instead:") as raised:
        exec(statement, {})
    assert reason in str(raised.value)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        tensorflow_privacy.NoSuchThing  # noqa: B018
    assert not hasattr(tensorflow_privacy.privacy.analysis, "no_such_module")


def test_accounting_path_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from pydp_r.tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy\n"
        "from pydp_r.tensorflow_privacy import compute_dp_sgd_privacy_statement\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# --- optimizers ----------------------------------------------------------------------------


def one_step(optimizer, gradient, start):
    """Apply `gradient` once to a variable at `start` through the DP optimizer's own path.

    The loss `sum(gradient * w)` of a batch of one has exactly this gradient; with noise 0 and a
    clip bound above its norm the DP gradient equals it.
    """
    variable = tf.Variable(start)
    gradients = optimizer.compute_dp_gradients(
        lambda unit: tf.reduce_sum(gradient * variable) * tf.reduce_mean(unit),
        tf.ones((1, 1)),
        [variable],
    )
    optimizer.apply_gradients(zip(gradients, [variable], strict=True))
    return variable.numpy()


def v1_step(v1_optimizer, gradient, start):
    variable = tf.Variable(start)
    v1_optimizer.apply_gradients([(tf.constant(gradient), variable)])
    return variable.numpy()


@pytest.mark.parametrize(
    "make_dp, make_v1",
    [
        (lambda dp: dp.DPGradientDescentGaussianOptimizer(100.0, 0.0, None, False, 0.3),
         lambda: tf.compat.v1.train.GradientDescentOptimizer(0.3)),
        (lambda dp: dp.DPAdamGaussianOptimizer(100.0, 0.0, 1, learning_rate=0.1, beta1=0.5),
         lambda: tf.compat.v1.train.AdamOptimizer(0.1, beta1=0.5)),
        (lambda dp: dp.DPAdagradGaussianOptimizer(100.0, 0.0, None, False, 0.2, 0.05),
         lambda: tf.compat.v1.train.AdagradOptimizer(0.2, initial_accumulator_value=0.05)),
    ],
)  # fmt: skip
def test_2019_gaussian_optimizers_take_the_v1_steps(make_dp, make_v1):
    from pydp_r.tensorflow_privacy.privacy.optimizers import dp_optimizer

    gradient = np.array([0.5, -2.0, 1e-3], np.float32)
    start = np.array([1.0, 2.0, -3.0], np.float32)
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = make_dp(dp_optimizer)
    assert isinstance(optimizer, pydp_r.DPOptimizerMixin)
    np.testing.assert_allclose(
        one_step(optimizer, gradient, start), v1_step(make_v1(), gradient, start), rtol=1e-6
    )


def test_2019_names_translate_arguments_and_round_trip():
    from pydp_r.tensorflow_privacy.v1 import DPAdamGaussianOptimizer

    optimizer = DPAdamGaussianOptimizer(
        l2_norm_clip=1.5, noise_multiplier=1.1, num_microbatches=4, learning_rate=0.01, beta2=0.9
    )
    assert isinstance(optimizer, pydp_r.DPAdam)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.9, 1e-8)
    assert optimizer.noise_stddev == pytest.approx(1.65)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer)
    assert restored.get_config() == optimizer.get_config()
    with pytest.raises(ValueError, match="use_locking must be True or False"):
        DPAdamGaussianOptimizer(1.0, 1.1, use_locking="yes")
    with pytest.raises(ValueError, match="requires the argument learning_rate"):
        tensorflow_privacy.v1.DPGradientDescentGaussianOptimizer(1.0, 1.1)


def test_vectorized_keras_signature_puts_learning_rate_fifth():
    optimizer = tensorflow_privacy.VectorizedDPKerasSGDOptimizer(1.0, 1.1, 8, True, 0.25)
    assert isinstance(optimizer, pydp_r.DPSGD)
    assert float(optimizer.learning_rate) == 0.25 and optimizer.num_microbatches == 8
    assert not optimizer.gradient_accumulation_steps


def test_keras_optimizers_refuse_tf1_graph_mode(monkeypatch):
    monkeypatch.setattr(tf.compat.v1, "executing_eagerly_outside_functions", lambda: False)
    with pytest.raises(RuntimeError, match="needs TensorFlow's eager execution"):
        tensorflow_privacy.DPKerasSGDOptimizer(1.0, 1.1, learning_rate=0.1)


@pytest.mark.slow
def test_disable_v2_behavior_gets_a_clear_error():
    code = (
        "import tensorflow as tf\n"
        "tf.compat.v1.disable_v2_behavior()\n"
        "from pydp_r import tensorflow_privacy\n"
        "tensorflow_privacy.DPKerasSGDOptimizer(1.0, 1.1, 250, learning_rate=0.25)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "needs TensorFlow's eager execution" in result.stderr
    assert "disable_v2_behavior" in result.stderr


# --- training through the namespace ---------------------------------------------------------


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 6, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, n), num_classes=3)
    return x, y


def small_layers():
    return [
        keras.layers.Input((6, 6, 1)),
        keras.layers.Conv2D(2, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ]


def clipped_mean_step(model, x, y, l2_norm_clip, learning_rate):
    """Weights after one DP-SGD step without noise, computed example by example."""
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    total = [np.zeros(w.shape, np.float32) for w in model.trainable_weights]
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[i : i + 1], model(x[i : i + 1]))
        gradients = tape.gradient(loss, model.trainable_weights)
        norm = tf.linalg.global_norm(gradients).numpy()
        scale = min(1.0, l2_norm_clip / norm)
        total = [t + scale * g.numpy() for t, g in zip(total, gradients, strict=True)]
    return [
        w.numpy() - learning_rate * t / len(x)
        for w, t in zip(model.trainable_weights, total, strict=True)
    ]


def test_dp_sequential_step_is_the_clipped_mean():
    from pydp_r.tensorflow_privacy.privacy.keras_models.dp_keras_model import DPSequential

    x, y = images(8)
    with pytest.warns(pydp_r.NoPrivacyWarning):
        model = DPSequential(
            l2_norm_clip=0.01, noise_multiplier=0.0, num_microbatches=8, layers=small_layers()
        )
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.5),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        )
    expected = clipped_mean_step(model, x, y, 0.01, 0.5)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for weight, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(weight, want, rtol=1e-4, atol=1e-6)
    assert isinstance(model.optimizer, pydp_r.DPSGD)
    assert (model.optimizer.l2_norm_clip, model.optimizer.num_microbatches) == (0.01, 8)


def test_dp_sequential_tutorial_style_trains_an_epoch_with_a_partial_batch():
    """mnist_dpsgd_tutorial_keras_model.py's code, small: DPSequential + plain SGD."""
    from pydp_r.tensorflow_privacy.privacy.keras_models.dp_keras_model import DPSequential

    x, y = images(40)
    model = DPSequential(
        l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=16, layers=small_layers()
    )
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.15)
    loss = tf.keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=1, validation_data=(x[:8], y[:8]), batch_size=16, verbose=0)
    assert model.optimizer.iterations.numpy() == 3  # 16 + 16 + 8: the last batch is partial
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert model.optimizer.noise_stddev == pytest.approx(1.1)
    assert optimizer.iterations.numpy() == 0  # the DP copy trained, as documented


def test_keras_optimizer_tutorial_style_with_per_example_loss_and_partial_batch():
    """mnist_dpsgd_tutorial_keras.py's code, small: num_microbatches == batch size."""
    from pydp_r.tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import (
        DPKerasSGDOptimizer,
    )

    x, y = images(40)
    model = tf.keras.Sequential(small_layers())
    optimizer = DPKerasSGDOptimizer(
        l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=16, learning_rate=0.15
    )
    loss = tf.keras.losses.CategoricalCrossentropy(
        from_logits=True, reduction=tf.losses.Reduction.NONE
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, epochs=1, validation_data=(x[:8], y[:8]), batch_size=16, verbose=0)
    assert optimizer.iterations.numpy() == 3
    assert np.isfinite(history.history["loss"][0])


def keras_step_weights(layers, x, y, learning_rate):
    """Weights after Keras' own SGD step on the mean squared error (no DP)."""
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("num_microbatches", [None, 1, 2, 4, 8])
def test_per_example_loss_with_microbatches_trains_the_mean_loss(num_microbatches):
    """TF Privacy's DPOptimizerComputeGradientsTest.testKerasModelBaselineNoNoise, one step.

    With reduction="none" each microbatch's gradient is its examples' mean gradient, so a
    step without clipping or noise is the step Keras takes on the mean loss, whatever the
    number of microbatches (it was 8, 4, 2 times that step for 1, 2, 4 microbatches).
    """
    from pydp_r.tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(8, 4)).astype(np.float32)
    y = x @ np.array([[-5], [4], [3], [2]], np.float32) + 6.0

    def layers():
        return [keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="zeros")]

    model = tf.keras.models.Sequential(layers())
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = dp_optimizer_keras.DPKerasSGDOptimizer(
            l2_norm_clip=1e6,
            noise_multiplier=0.0,
            num_microbatches=num_microbatches,
            learning_rate=0.01,
        )
    model.compile(optimizer, tf.keras.losses.MeanSquaredError(reduction="none"))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    expected = keras_step_weights(layers(), x, y, 0.01)
    for weight, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(weight, want, rtol=1e-5, atol=1e-6)


def test_per_step_loss_of_a_sequence_model_trains_the_mean_loss():
    # A sequence model's reduction="none" loss has one value per example and step: each
    # example's loss is their mean, not their sum (which made the step 5 times too long).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5, 2)).astype(np.float32)
    y = rng.normal(size=(6, 5, 1)).astype(np.float32)

    def layers():
        return [keras.Input((5, 2)), keras.layers.Dense(1, kernel_initializer="ones")]

    model = keras.Sequential(layers())
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = tensorflow_privacy.DPKerasSGDOptimizer(1e6, 0.0, learning_rate=0.05)
    model.compile(optimizer, keras.losses.MeanSquaredError(reduction="none"))
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    expected = keras_step_weights(layers(), x, y, 0.05)
    for weight, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(weight, want, rtol=1e-5, atol=1e-6)


def test_dp_model_functional_and_subclassed():
    from pydp_r.tensorflow_privacy.privacy.keras_models import dp_keras_model

    x = np.random.default_rng(1).random((12, 3), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    inputs = keras.Input((3,))
    functional = dp_keras_model.DPModel(
        1.0, 0.5, inputs=inputs, outputs=keras.layers.Dense(1)(inputs)
    )
    functional.compile(optimizer="adam", loss="mse")
    functional.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert isinstance(functional.optimizer, pydp_r.DPAdam)
    assert functional.optimizer.num_microbatches is None

    class Regressor(dp_keras_model.DPModel):
        def __init__(self):
            super().__init__(l2_norm_clip=2.0, noise_multiplier=0.7, use_xla=False)
            self.dense = keras.layers.Dense(1)

        def call(self, inputs):
            return self.dense(inputs)

    subclassed = Regressor()
    subclassed.compile(optimizer=keras.optimizers.Lion(1e-3), loss="mse")
    subclassed.fit(x, y, batch_size=5, epochs=1, verbose=0)
    assert isinstance(subclassed.optimizer, keras.optimizers.Lion)
    assert isinstance(subclassed.optimizer, pydp_r.DPOptimizerMixin)
    assert subclassed.optimizer.l2_norm_clip == 2.0
    with pytest.raises(AttributeError):
        subclassed.noise_multiplier = 0.0  # the settings the step uses are read-only


def test_dp_model_refuses_what_it_cannot_honour():
    from pydp_r.tensorflow_privacy.privacy.keras_models.dp_keras_model import DPSequential

    with pytest.raises(ValueError, match="Did you mean it for use_xla"):
        DPSequential(1.0, 1.1, True)
    with pytest.raises(ValueError, match="layer_registry must be None"):
        DPSequential(1.0, 1.1, layer_registry=object())
    with pytest.raises(ValueError, match="l2_norm_clip must be"):
        DPSequential(layers=[keras.layers.Dense(1)])
    model = DPSequential(1.0, 1.1, layers=[keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="adds the privacy itself"):
        model.compile(optimizer=pydp_r.DPSGD(1.0, 1.1), loss="mse")


def test_dp_sequential_config_round_trip():
    from pydp_r.tensorflow_privacy.privacy.keras_models.dp_keras_model import DPSequential

    model = DPSequential(1.5, 0.9, 4, False, layers=[keras.Input((3,)), keras.layers.Dense(2)])
    restored = DPSequential.from_config(model.get_config())
    assert type(restored) is DPSequential
    assert (restored.l2_norm_clip, restored.noise_multiplier) == (1.5, 0.9)
    assert (restored.num_microbatches, restored.use_xla) == (4, False)
    assert len(restored.layers) == 1
