"""Tests of pydp_r.audit.membership: AUC, per-example losses, the attack on trained models."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pydp_r.audit import membership

# Statistical, end-to-end or multi-process: the slow tier (`make test-fast` skips it).
pytestmark = pytest.mark.slow


def _pairwise_auc(negatives, positives):
    """Reference AUC by comparing every pair (ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return (greater + 0.5 * ties) / (positives.size * negatives.size)


def _linear_model(num_features=3, seed=0):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((num_features,)), keras.layers.Dense(1)])
    kernel = rng.normal(size=(num_features, 1)).astype(np.float32)
    model.set_weights([kernel, np.zeros(1, np.float32)])
    return model, kernel


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    negatives = rng.integers(0, 20, size=150).astype(float)  # many ties
    positives = rng.integers(3, 23, size=110).astype(float)
    assert membership.roc_auc(negatives, positives) == pytest.approx(
        _pairwise_auc(negatives, positives), abs=1e-12
    )
    assert membership.roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert membership.roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert membership.roc_auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="positive_scores"):
        membership.roc_auc([1.0], [])


def test_per_example_losses_are_each_examples_own_loss():
    model, kernel = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    y = rng.normal(size=(7, 1)).astype(np.float32)
    expected_squared = ((x @ kernel - y) ** 2).reshape(-1)
    np.testing.assert_allclose(
        membership.per_example_losses(model, x, y, "mse", batch_size=3), expected_squared, rtol=1e-5
    )
    np.testing.assert_allclose(
        membership.per_example_losses(model, x, y, keras.losses.MeanAbsoluteError()),
        np.abs(x @ kernel - y).reshape(-1),
        rtol=1e-5,
    )
    model.compile(loss="mse")
    np.testing.assert_allclose(
        membership.per_example_losses(model, x, y), expected_squared, rtol=1e-5
    )
    uncompiled, _ = _linear_model()
    with pytest.raises(ValueError, match="loss"):
        membership.per_example_losses(uncompiled, x, y)


def test_attack_separates_memorized_members_and_ignores_identical_distributions():
    model, kernel = _linear_model()
    rng = np.random.default_rng(2)
    x_members = rng.normal(size=(400, 3)).astype(np.float32)
    x_non_members = rng.normal(size=(400, 3)).astype(np.float32)
    # Members fitted almost exactly, non-members with unit noise: a memorizing model.
    y_members_leaky = x_members @ kernel + rng.normal(0, 0.01, (400, 1)).astype(np.float32)
    y_non_members = x_non_members @ kernel + rng.normal(0, 1.0, (400, 1)).astype(np.float32)
    leaky = membership.membership_inference(
        model, (x_members, y_members_leaky), (x_non_members, y_non_members), 1e-5, loss="mse"
    )
    assert leaky.auc > 0.95
    assert leaky.advantage > 0.85
    assert leaky.epsilon_lower_bound > 2.0
    assert leaky.member_losses.shape == (400,)
    # The same noise on both sides: nothing to find.
    y_members = x_members @ kernel + rng.normal(0, 1.0, (400, 1)).astype(np.float32)
    blind = membership.membership_inference(
        model, (x_members, y_members), (x_non_members, y_non_members), 1e-5, loss="mse"
    )
    assert abs(blind.auc - 0.5) < 0.06
    assert blind.epsilon_lower_bound < 0.3
    assert "AUC" in blind.summary()
    # Batched datasets give the same attack as arrays.
    as_dataset = membership.membership_inference(
        model,
        tf.data.Dataset.from_tensor_slices((x_members, y_members)).batch(64),
        tf.data.Dataset.from_tensor_slices((x_non_members, y_non_members)).batch(64),
        1e-5,
        loss="mse",
    )
    assert as_dataset.auc == blind.auc
    np.testing.assert_array_equal(as_dataset.member_losses, blind.member_losses)
    # Members with *higher* loss (e.g. non-members from an easier time range) are not
    # evidence of memorization: the attack only counts low loss as membership.
    reversed_attack = membership.membership_inference(
        model, (x_non_members, y_non_members), (x_members, y_members_leaky), 1e-5, loss="mse"
    )
    assert reversed_attack.auc < 0.05
    assert reversed_attack.epsilon_lower_bound == 0.0


def test_attack_rejects_bad_arguments():
    model, _ = _linear_model()
    x = np.zeros((10, 3), np.float32)
    y = np.zeros((10, 1), np.float32)
    with pytest.raises(ValueError, match="delta"):
        membership.membership_inference(model, (x, y), (x, y), 0.0, loss="mse")
    with pytest.raises(ValueError, match="members"):
        membership.membership_inference(model, x, (x, y), 1e-5, loss="mse")
    with pytest.raises(ValueError, match="at least 8"):
        membership.membership_inference(model, (x[:4], y[:4]), (x, y), 1e-5, loss="mse")


def test_private_training_resists_the_attack_that_breaks_non_private_training():
    non_private = membership.membership_inference_experiment(False, num_members=500, epochs=150)
    private = membership.membership_inference_experiment(True, num_members=500, epochs=20)
    assert non_private.epsilon == math.inf
    assert non_private.train_accuracy > 0.95  # memorized, flipped labels included
    assert non_private.attack.auc > 0.65
    assert non_private.attack.epsilon_lower_bound > 1.0
    assert private.attack.auc < 0.6
    assert private.attack.epsilon_lower_bound < private.epsilon
    assert private.attack.epsilon_lower_bound < non_private.attack.epsilon_lower_bound
    # The private model still learned the task.
    assert private.test_accuracy > 0.6
