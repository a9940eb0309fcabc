"""PrivacyBudget in fit(): logs compute_epsilon per epoch, counts across fits, stops on budget."""

import keras
import numpy as np
import pytest

import pydp_r
from pydp_r.accounting import compute_epsilon
from pydp_r.callbacks import PrivacyBudget

N, BATCH, DELTA = 64, 16, 1e-3


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def model_with(optimizer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def dp_sgd(noise_multiplier=1.0, **kwargs):
    return pydp_r.DPSGD(
        l2_norm_clip=1.0, noise_multiplier=noise_multiplier, learning_rate=0.05, **kwargs
    )


def test_logged_epsilon_is_compute_epsilon_and_counts_across_fits():
    x, y = data()
    model = model_with(dp_sgd(noise_multiplier=1.2))
    budget = PrivacyBudget(N, BATCH, DELTA)
    assert budget.epsilon is None
    history = model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[budget], verbose=0)
    expected = [compute_epsilon(N, BATCH, 1.2, epochs, DELTA) for epochs in (1, 2, 3)]
    assert history.history["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert expected[0] < expected[1] < expected[2]
    assert budget.epsilon == history.history["epsilon"][-1]
    # A second fit() continues the count: its first epoch is the fourth.
    history = model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert history.history["epsilon"] == pytest.approx([compute_epsilon(N, BATCH, 1.2, 4, DELTA)])
    assert budget.epochs_completed == 4


def test_steps_beyond_the_epoch_count_are_accounted():
    # 64 examples in batches of 24 take 3 steps per epoch (the last one partial), while
    # ceil(epochs * 64 / 24) counts only 3, 6, 8 steps after 1, 2, 3 epochs: the third
    # epoch's 9th step must be accounted too.
    x, y = data()
    model = model_with(dp_sgd(noise_multiplier=1.2))
    budget = PrivacyBudget(N, 24, DELTA)
    history = model.fit(x, y, batch_size=24, epochs=3, callbacks=[budget], verbose=0)
    by_steps = [compute_epsilon(N, 24, 1.2, steps * 24 / N, DELTA) for steps in (3, 6, 9)]
    by_epochs = [compute_epsilon(N, 24, 1.2, epochs, DELTA) for epochs in (1, 2, 3)]
    assert history.history["epsilon"] == pytest.approx(by_steps, rel=1e-12)
    assert history.history["epsilon"][2] > by_epochs[2]


def test_pld_accountant_is_used_when_asked():
    x, y = data()
    model = model_with(dp_sgd())
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=1,
        callbacks=[PrivacyBudget(N, BATCH, DELTA, accountant="pld")],
        verbose=0,
    )
    pld = compute_epsilon(N, BATCH, 1.0, 1, DELTA, accountant="pld")
    assert history.history["epsilon"] == pytest.approx([pld])
    assert pld < compute_epsilon(N, BATCH, 1.0, 1, DELTA)


def test_microbatching_and_gradient_accumulation_change_the_accounting():
    x, y = data()
    # 4 microbatches of 4 examples each: sensitivity doubled.
    model = model_with(dp_sgd(num_microbatches=4))
    history = model.fit(
        x, y, batch_size=BATCH, epochs=1, callbacks=[PrivacyBudget(N, BATCH, DELTA)], verbose=0
    )
    doubled = compute_epsilon(N, BATCH, 1.0, 1, DELTA, used_microbatching=True)
    assert history.history["epsilon"] == pytest.approx([doubled])
    # One example per microbatch is ordinary per-example clipping.
    model = model_with(dp_sgd(num_microbatches=BATCH))
    history = model.fit(
        x, y, batch_size=BATCH, epochs=1, callbacks=[PrivacyBudget(N, BATCH, DELTA)], verbose=0
    )
    assert history.history["epsilon"] == pytest.approx([compute_epsilon(N, BATCH, 1.0, 1, DELTA)])
    # Accumulating 2 batches of 8: logical batch 16, noise once per 16 examples.
    model = model_with(dp_sgd(gradient_accumulation_steps=2))
    history = model.fit(
        x, y, batch_size=8, epochs=1, callbacks=[PrivacyBudget(N, 8, DELTA)], verbose=0
    )
    assert history.history["epsilon"] == pytest.approx([compute_epsilon(N, 16, 1.0, 1, DELTA)])


def test_target_epsilon_stops_before_the_budget_is_exceeded():
    x, y = data()
    two_epochs = compute_epsilon(N, BATCH, 1.0, 2, DELTA)
    three_epochs = compute_epsilon(N, BATCH, 1.0, 3, DELTA)
    target = (two_epochs + three_epochs) / 2
    budget = PrivacyBudget(N, BATCH, DELTA, target_epsilon=target)
    model = model_with(dp_sgd())
    history = model.fit(x, y, batch_size=BATCH, epochs=10, callbacks=[budget], verbose=0)
    assert len(history.history["epsilon"]) == 2
    assert max(history.history["epsilon"]) <= target
    # The budget is spent: another fit() refuses to start rather than exceed it.
    with pytest.raises(ValueError, match="target_epsilon=.* would be exceeded by the next epoch"):
        model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)


def test_target_below_first_epoch_refuses_to_train():
    x, y = data()
    model = model_with(dp_sgd())
    before = [w.copy() for w in model.get_weights()]
    target = compute_epsilon(N, BATCH, 1.0, 1, DELTA) * 0.99
    with pytest.raises(ValueError, match="would be exceeded by the next epoch"):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=1,
            callbacks=[PrivacyBudget(N, BATCH, DELTA, target_epsilon=target)],
            verbose=0,
        )
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_model_without_dp_optimizer_is_refused():
    x, y = data()
    model = model_with(keras.optimizers.SGD(0.05))
    with pytest.raises(ValueError, match="needs a model compiled with a DP optimizer.*SGD"):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=1,
            callbacks=[PrivacyBudget(N, BATCH, DELTA)],
            verbose=0,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"batch_size": 65}, r"batch_size must be an integer in \[1, n\]"),
        ({"delta": 0.0}, r"delta must be a number in the open interval \(0, 1\)"),
        ({"target_epsilon": 0.0}, "target_epsilon must be a finite number > 0"),
        ({"accountant": "gdp"}, "accountant must be one of"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrivacyBudget(**{"n": N, "batch_size": BATCH, "delta": DELTA, **kwargs})
