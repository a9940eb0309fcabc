"""Tests of pydp_r.audit.step: the real optimizers pass, deliberately broken ones are caught.

The broken optimizers (mutants) live here only: each is what a plausible bug would do.
"""

import numpy as np
import pytest
import tensorflow as tf

import pydp_r
from pydp_r.audit import step
from pydp_r.step import clipping, fast_clipping

# Statistical, end-to-end or multi-process: the slow tier (`make test-fast` skips it).
pytestmark = pytest.mark.slow

NOISE_MULTIPLIER = 1.0
DELTA = 1e-5
TRIALS = 3000


class _NoClippingDPSGD(pydp_r.DPSGD):
    """Mutant: forgets to clip (custom-loop path), noise still calibrated to l2_norm_clip."""

    def compute_dp_gradients(self, loss_fn, inputs, variables):
        sums, _, _, num_units = clipping.clipped_gradient_sum(
            lambda unit: (loss_fn(unit), ()), inputs, variables, float("inf")
        )
        return self.private_gradients(sums, num_units)


class _HalfNoiseDPSGD(pydp_r.DPSGD):
    """Mutant: noise std noise_multiplier * C / 2."""

    @property
    def noise_stddev(self):
        return self.noise_multiplier * self.l2_norm_clip / 2


class _PerUnitNoiseDPSGD(pydp_r.DPSGD):
    """Mutant: noise added to every unit's clipped gradient with std noise_multiplier * C /
    num_units (so the sum carries std noise_multiplier * C / sqrt(num_units), not the full)."""

    def _noised_average(self, clipped_gradient_sums, num_units, loss_scale=1.0):
        units = tf.cast(num_units, tf.float32)
        gradients = []
        for gradient_sum in clipped_gradient_sums:
            shape = tf.concat([[num_units], tf.shape(gradient_sum)], 0)
            per_unit = tf.random.normal(shape, stddev=self.noise_stddev) / units
            gradients.append((gradient_sum + tf.reduce_sum(per_unit, axis=0)) / units)
        return gradients


def _audit(optimizer, mode="gradients", trials=TRIALS, **kwargs):
    return step.audit_optimizer_step(optimizer, num_trials=trials, delta=DELTA, mode=mode, **kwargs)


@pytest.mark.parametrize("mode", step.MODES)
def test_real_dpsgd_passes_and_comes_close_to_the_claim(mode):
    result = _audit(pydp_r.DPSGD(1.0, NOISE_MULTIPLIER, learning_rate=0.1), mode)
    assert result.passed
    assert result.dp.epsilon_lower_bound < result.claimed_epsilon
    assert result.gdp.epsilon_lower_bound < result.claimed_epsilon
    # Thousands of trials cannot reach delta = 1e-5 directly; the Gaussian-shape bound gets
    # within a quarter of the claim.
    assert result.ratio > 0.7
    assert result.claimed_epsilon == pytest.approx(result.exact_epsilon, rel=0.01)


def test_statistic_shifts_by_the_clipping_bound_in_noise_of_the_promised_scale():
    l2_norm_clip, batch_size = 2.0, 8
    result = _audit(pydp_r.DPSGD(l2_norm_clip, NOISE_MULTIPLIER), batch_size=batch_size)
    # Private gradient = (clipped sum + noise) / batch size, projected on the canary direction.
    shift = np.mean(result.scores_with) - np.mean(result.scores_without)
    assert shift == pytest.approx(l2_norm_clip / batch_size, abs=0.01)
    expected_std = NOISE_MULTIPLIER * l2_norm_clip / batch_size
    assert np.std(result.scores_without) == pytest.approx(expected_std, rel=0.05)
    assert np.std(result.scores_with) == pytest.approx(expected_std, rel=0.05)


def test_real_dpadam_and_microbatched_dpsgd_pass():
    adam = _audit(pydp_r.DPAdam(1.0, NOISE_MULTIPLIER, learning_rate=0.1), "train_step")
    assert adam.passed
    microbatched = _audit(pydp_r.DPSGD(1.0, NOISE_MULTIPLIER, num_microbatches=4), batch_size=8)
    assert microbatched.sensitivity == 2.0
    assert microbatched.passed
    # The partner example makes the canary's microbatch move by the full 2 C.
    assert microbatched.gdp.mu_lower_bound > 1 / NOISE_MULTIPLIER


@pytest.mark.parametrize(
    "mutant", [_NoClippingDPSGD, _HalfNoiseDPSGD, _PerUnitNoiseDPSGD], ids=lambda c: c.__name__
)
def test_broken_optimizers_are_caught(mutant):
    result = _audit(mutant(1.0, NOISE_MULTIPLIER))
    assert not result.passed
    assert result.epsilon_lower_bound > result.claimed_epsilon


def test_missing_clipping_is_caught_even_by_the_bound_for_any_mechanism():
    result = _audit(_NoClippingDPSGD(1.0, NOISE_MULTIPLIER))
    assert result.dp.epsilon_lower_bound > result.claimed_epsilon


def test_broken_fit_step_is_caught(monkeypatch):
    half_noise = _audit(_HalfNoiseDPSGD(1.0, NOISE_MULTIPLIER, learning_rate=0.1), "train_step")
    assert not half_noise.passed
    # Mutant of the fit() path's fast clipping: every clip factor 1.
    monkeypatch.setattr(
        fast_clipping,
        "clip_factors",
        lambda squared_norms, l2_norm_clip: tf.ones_like(squared_norms),
    )
    no_clipping = _audit(pydp_r.DPSGD(1.0, NOISE_MULTIPLIER, learning_rate=0.1), "train_step")
    assert not no_clipping.passed


def test_audit_is_seeded_and_leaves_the_callers_optimizer_alone():
    optimizer = pydp_r.DPSGD(1.0, NOISE_MULTIPLIER)
    first = _audit(optimizer, trials=200, seed=3)
    second = _audit(optimizer, trials=200, seed=3)
    other = _audit(optimizer, trials=200, seed=4)
    np.testing.assert_array_equal(first.scores_with, second.scores_with)
    assert not np.array_equal(first.scores_with, other.scores_with)
    assert not optimizer.built
    # The audit's unapplied private gradients must not unlock aggregated gradients.
    variable = tf.Variable([1.0])
    with pytest.raises(RuntimeError, match="aggregated gradients"):
        optimizer.apply_gradients([(tf.constant([1.0]), variable)])


def test_summary_states_claim_bounds_and_verdict():
    result = _audit(_HalfNoiseDPSGD(1.0, NOISE_MULTIPLIER), trials=500)
    text = result.summary()
    assert f"{result.claimed_epsilon:.3f}" in text
    assert f"{result.gdp.epsilon_lower_bound:.3f}" in text
    assert ("FAIL" in text) != result.passed


def test_audit_rejects_bad_arguments():
    import keras

    with pytest.raises(ValueError, match="optimizer"):
        step.audit_optimizer_step(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        step.audit_optimizer_step(pydp_r.DPSGD(1.0, 1.0, gradient_accumulation_steps=2))
    with pytest.warns(pydp_r.NoPrivacyWarning):
        no_noise = pydp_r.DPSGD(1.0, 0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        step.audit_optimizer_step(no_noise)
    with pytest.raises(ValueError, match="num_trials"):
        step.audit_optimizer_step(pydp_r.DPSGD(1.0, 1.0), num_trials=2)
    with pytest.raises(ValueError, match="batch_size"):
        step.audit_optimizer_step(pydp_r.DPSGD(1.0, 1.0, num_microbatches=3), batch_size=8)
    with pytest.raises(ValueError, match="mode"):
        step.audit_optimizer_step(pydp_r.DPSGD(1.0, 1.0), mode="eager")
    with pytest.raises(ValueError, match="canary_gradient_norm"):
        step.audit_optimizer_step(pydp_r.DPSGD(1.0, 1.0), canary_gradient_norm=0.5)


class _PerExampleInUserBatchesDPSGD(pydp_r.DPSGD):
    """Mutant: ignores the user blocks fit() sets and clips every example on its own, so a
    user of m examples moves the step by up to m * C."""

    @property
    def user_blocks(self):
        return None

    @user_blocks.setter
    def user_blocks(self, value):
        pass


def test_user_level_step_removing_a_whole_user_stays_within_the_per_user_claim():
    learning_rate, num_users = 0.1, 4
    result = step.audit_user_level_step(
        pydp_r.DPSGD(1.0, NOISE_MULTIPLIER, learning_rate=learning_rate),
        num_trials=2000,
        delta=DELTA,
        num_users=num_users,
        examples_per_user=8,
    )
    assert result.passed and result.mode == "user_step" and result.sensitivity == 1.0
    assert result.ratio > 0.6  # close to the claim: the user moves the step by C, not less
    # The update is learning_rate * (clipped sum + noise) / users: a user of 8 examples far
    # above the clip shifts it by one C, in noise of std noise_multiplier * C.
    shift = np.mean(result.scores_with) - np.mean(result.scores_without)
    assert shift == pytest.approx(learning_rate / num_users, rel=0.1)
    assert np.std(result.scores_without) == pytest.approx(
        NOISE_MULTIPLIER * learning_rate / num_users, rel=0.05
    )


def test_user_level_audit_catches_clipping_per_example_instead_of_per_user():
    result = step.audit_user_level_step(
        _PerExampleInUserBatchesDPSGD(1.0, NOISE_MULTIPLIER, learning_rate=0.1),
        num_trials=300,
        delta=DELTA,
        examples_per_user=8,
    )
    assert not result.passed
    assert result.ratio > 2
    # Eight examples clipped one by one: the statistic moves by about 8 noise std, not 1.
    assert result.gdp.mu_lower_bound > 3


def test_user_level_audit_rejects_microbatches_and_bad_sizes():
    with pytest.raises(ValueError, match="num_microbatches=None"):
        step.audit_user_level_step(pydp_r.DPSGD(1.0, 1.0, num_microbatches=2), num_trials=8)
    with pytest.raises(ValueError, match="num_users must be an integer >= 2; received 1"):
        step.audit_user_level_step(pydp_r.DPSGD(1.0, 1.0), num_users=1)
