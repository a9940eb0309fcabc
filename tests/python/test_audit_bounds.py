"""Tests of pydp_r.audit.bounds: Clopper-Pearson, error rates to epsilon, the Gaussian curve."""

import math

import numpy as np
import pytest
from scipy import stats

from pydp_r.audit import bounds


def test_clopper_pearson_matches_closed_forms_and_published_interval():
    trials, confidence = 40, 0.9
    alpha = 1 - confidence
    # With no successes (all successes) the exact bounds have a closed form.
    lower, upper = bounds.clopper_pearson_interval(0, trials, confidence)
    assert lower == 0.0
    assert upper == pytest.approx(1 - (alpha / 2) ** (1 / trials), rel=1e-9)
    lower, upper = bounds.clopper_pearson_interval(trials, trials, confidence)
    assert lower == pytest.approx((alpha / 2) ** (1 / trials), rel=1e-9)
    assert upper == 1.0
    # The textbook 95% interval for 50 of 100 is (0.3983, 0.6017).
    lower, upper = bounds.clopper_pearson_interval(50, 100, 0.95)
    assert lower == pytest.approx(0.3983, abs=1e-4)
    assert upper == pytest.approx(0.6017, abs=1e-4)


def test_clopper_pearson_covers_the_true_rate_at_least_as_often_as_promised():
    rng = np.random.default_rng(0)
    rate, trials = 0.07, 60
    successes = rng.binomial(trials, rate, size=4000)
    lower, upper = bounds.clopper_pearson_interval(successes, trials, 0.9)
    coverage = np.mean((lower <= rate) & (rate <= upper))
    # Exact intervals are conservative: coverage >= 0.9 up to sampling error (sd 0.005).
    assert coverage >= 0.9 - 0.015
    # ... but not trivially so: a width of 1 would also cover.
    assert np.mean(upper - lower) < 0.2


def test_clopper_pearson_rejects_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        bounds.clopper_pearson_interval(1, 10, 1.0)
    with pytest.raises(ValueError, match="successes"):
        bounds.clopper_pearson_interval(11, 10)
    with pytest.raises(ValueError, match="trials"):
        bounds.clopper_pearson_interval(0, 0)


def test_error_rates_of_randomized_response_give_back_its_epsilon():
    # Randomized response with epsilon0 errs with probability 1 / (1 + e^epsilon0) both ways.
    epsilon0 = 1.7
    error = 1 / (1 + math.exp(epsilon0))
    assert bounds.epsilon_from_error_rates(error, error, 1e-12) == pytest.approx(epsilon0, 1e-6)
    # A blind test (FPR + FNR = 1) proves nothing.
    assert bounds.epsilon_from_error_rates(0.3, 0.7, 1e-5) == 0.0
    with pytest.raises(ValueError, match="false_positive_rate"):
        bounds.epsilon_from_error_rates(1.5, 0.1, 1e-5)


@pytest.mark.parametrize("noise_multiplier", [0.7, 1.0, 2.0])
def test_exact_gaussian_epsilon_is_the_best_threshold_test_and_matches_the_accountant(
    noise_multiplier,
):
    delta = 1e-5
    exact = bounds.gaussian_epsilon(noise_multiplier, delta)
    assert bounds.gaussian_delta(noise_multiplier, exact) == pytest.approx(delta, rel=1e-6)
    # The supremum over thresholds of the testing inequality, on the exact Gaussian rates,
    # is the exact epsilon: two independent routes to the same number.
    thresholds = np.linspace(0, 12, 200001) * noise_multiplier
    fpr = stats.norm.sf(thresholds / noise_multiplier)
    fnr = stats.norm.cdf((thresholds - 1) / noise_multiplier)
    best = np.max(bounds.epsilon_from_error_rates(fpr, fnr, delta))
    assert best == pytest.approx(exact, rel=1e-4)
    # The PLD accountant is pessimistic by its discretization, and only slightly.
    claimed = bounds.accountant_epsilon_one_step(noise_multiplier, delta)
    assert exact <= claimed <= exact * 1.01
    # Sensitivity 2 is noise halved.
    assert bounds.gaussian_epsilon(noise_multiplier, delta, sensitivity=2.0) == pytest.approx(
        bounds.gaussian_epsilon(noise_multiplier / 2, delta), rel=1e-9
    )


def test_audit_statistics_on_the_gaussian_mechanism_reproduce_its_tradeoff_curve():
    rng = np.random.default_rng(1)
    noise_multiplier, trials = 1.5, 20000
    without = rng.normal(0.0, noise_multiplier, trials)
    with_canary = rng.normal(1.0, noise_multiplier, trials)
    thresholds = np.linspace(-2, 5, 15)
    # All 30 intervals at once at 95%: Bonferroni.
    confidence = 1 - 0.05 / (2 * thresholds.size)
    for threshold in thresholds:
        false_positives = int(np.sum(without > threshold))
        false_negatives = int(np.sum(with_canary <= threshold))
        true_fpr = stats.norm.sf(threshold / noise_multiplier)
        true_fnr = bounds.gaussian_false_negative_rate(true_fpr, noise_multiplier)
        low, high = bounds.clopper_pearson_interval(false_positives, trials, confidence)
        assert low <= true_fpr <= high
        low, high = bounds.clopper_pearson_interval(false_negatives, trials, confidence)
        assert low <= true_fnr <= high


def test_lower_bounds_on_the_gaussian_mechanism_are_sound_and_the_gaussian_one_is_close():
    rng = np.random.default_rng(2)
    noise_multiplier, delta, trials = 1.0, 1e-5, 10000
    exact = bounds.gaussian_epsilon(noise_multiplier, delta)
    without = rng.normal(0.0, noise_multiplier, trials)
    with_canary = rng.normal(1.0, noise_multiplier, trials)
    any_mechanism = bounds.epsilon_lower_bound(without, with_canary, delta, method="dp")
    gaussian = bounds.epsilon_lower_bound(without, with_canary, delta, method="gdp")
    assert 0 < any_mechanism.epsilon_lower_bound < exact
    assert 0.75 * exact < gaussian.epsilon_lower_bound < exact
    assert gaussian.mu_lower_bound < 1 / noise_multiplier
    assert any_mechanism.direction == 1
    assert any_mechanism.num_selection_trials == any_mechanism.num_evaluation_trials == 5000
    # The reported rates are those of the evaluation half at the chosen threshold.
    evaluation_without = without[5000:]
    assert any_mechanism.false_positive_rate == pytest.approx(
        np.mean(evaluation_without > any_mechanism.threshold)
    )
    # Scores that carry no information give no bound.
    no_signal = bounds.epsilon_lower_bound(without, rng.normal(0, 1, trials), delta, method="dp")
    assert no_signal.epsilon_lower_bound < 0.2
    # Reversed scores are found by the other direction.
    reversed_audit = bounds.epsilon_lower_bound(-without, -with_canary, delta, method="gdp")
    assert reversed_audit.direction == -1
    assert reversed_audit.epsilon_lower_bound > 0.75 * exact
    # A test whose direction is fixed the wrong way finds nothing.
    fixed = bounds.epsilon_lower_bound(-without, -with_canary, delta, method="gdp", direction=1)
    assert fixed.direction == 1
    assert fixed.epsilon_lower_bound == 0.0


def test_lower_bound_exceeds_the_exact_epsilon_rarely_over_many_audits():
    rng = np.random.default_rng(3)
    noise_multiplier, delta, trials = 1.0, 1e-3, 400
    exact = bounds.gaussian_epsilon(noise_multiplier, delta)
    violations = {"dp": 0, "gdp": 0}
    for _ in range(40):
        without = rng.normal(0.0, noise_multiplier, trials)
        with_canary = rng.normal(1.0, noise_multiplier, trials)
        for method in violations:
            audit = bounds.epsilon_lower_bound(without, with_canary, delta, 0.95, method=method)
            violations[method] += audit.epsilon_lower_bound > exact
    # At 95% confidence, about 2 of 40 audits may exceed the truth; many more would mean the
    # threshold choice leaks into the evaluation.
    assert violations["dp"] <= 5
    assert violations["gdp"] <= 5


def test_a_mechanism_with_half_the_noise_is_caught():
    rng = np.random.default_rng(4)
    noise_multiplier, delta, trials = 1.0, 1e-5, 4000
    claimed = bounds.accountant_epsilon_one_step(noise_multiplier, delta)
    without = rng.normal(0.0, noise_multiplier / 2, trials)
    with_canary = rng.normal(1.0, noise_multiplier / 2, trials)
    gaussian = bounds.epsilon_lower_bound(without, with_canary, delta, method="gdp")
    assert gaussian.epsilon_lower_bound > claimed


def test_epsilon_lower_bound_rejects_bad_arguments():
    scores = np.arange(10.0)
    with pytest.raises(ValueError, match="scores_without"):
        bounds.epsilon_lower_bound(scores[:3], scores, 1e-5)
    with pytest.raises(ValueError, match="scores_with"):
        bounds.epsilon_lower_bound(scores, np.append(scores, np.nan), 1e-5)
    with pytest.raises(ValueError, match="delta"):
        bounds.epsilon_lower_bound(scores, scores, 0.0)
    with pytest.raises(ValueError, match="method"):
        bounds.epsilon_lower_bound(scores, scores, 1e-5, method="bayes")
    with pytest.raises(ValueError, match="noise_multiplier"):
        bounds.gaussian_epsilon(0.0, 1e-5)
