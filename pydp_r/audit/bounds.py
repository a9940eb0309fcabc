"""From attack outcomes to epsilon lower bounds: Clopper-Pearson intervals and threshold tests.

An (epsilon, delta)-DP mechanism bounds every test that tries to tell two neighbouring inputs
apart from its output: with false positive rate FPR and false negative rate FNR,
`FPR + exp(epsilon) * FNR >= 1 - delta` and `FNR + exp(epsilon) * FPR >= 1 - delta` (Kairouz,
Oh and Viswanath 2015). An audit runs the mechanism many times on each input, measures a
test's error rates, replaces them by Clopper-Pearson upper confidence bounds, and solves for
the smallest epsilon consistent with them (Jagielski, Ullman and Oprea 2020; Nasr et al.
2021). The result holds with probability at least `confidence` over the audit's randomness.

The exact (epsilon, delta) curve of one Gaussian mechanism (Balle and Wang 2018, Theorem 8)
is here too, so that audits can be checked against the truth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import dp_accounting
import numpy as np
from scipy import optimize, special, stats

from pydp_r._checks import (
    check_finite_scores,
    check_open_probability,
    check_positive,
    check_real,
)


def clopper_pearson_interval(
    successes: int | np.ndarray, trials: int | np.ndarray, confidence: float = 0.95
) -> tuple[Any, Any]:
    """Two-sided Clopper-Pearson (exact binomial) confidence interval for a success rate.

    Args:
        successes: Number of successes, integer in [0, trials]; an array gives an interval
            per element.
        trials: Number of independent trials, integer >= 1 (broadcast against `successes`).
        confidence: Coverage probability of the interval, in (0, 1).

    Returns:
        `(lower, upper)`, each a float (or an array shaped like the broadcast inputs), with
        `lower = 0` when there are no successes and `upper = 1` when all are successes.

    Raises:
        ValueError: For a confidence outside (0, 1), trials < 1, or successes outside
            [0, trials].
    """
    confidence = check_open_probability("confidence", confidence)
    successes_array = np.asarray(successes, dtype=np.float64)
    trials_array = np.asarray(trials, dtype=np.float64)
    if np.any(trials_array < 1) or np.any(trials_array != np.floor(trials_array)):
        raise ValueError(f"trials must be integers >= 1; received {trials!r}.")
    if (
        np.any(successes_array < 0)
        or np.any(successes_array > trials_array)
        or np.any(successes_array != np.floor(successes_array))
    ):
        raise ValueError(f"successes must be integers in [0, trials]; received {successes!r}.")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        lower = np.where(
            successes_array == 0,
            0.0,
            special.betaincinv(successes_array, trials_array - successes_array + 1, alpha / 2),
        )
        upper = np.where(
            successes_array == trials_array,
            1.0,
            special.betaincinv(successes_array + 1, trials_array - successes_array, 1 - alpha / 2),
        )
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def _one_sided_upper(successes: np.ndarray, trials: int, confidence: float) -> np.ndarray:
    """Upper Clopper-Pearson bound holding with probability `confidence` (one-sided)."""
    _, upper = clopper_pearson_interval(successes, trials, 2 * confidence - 1)
    return np.asarray(upper, dtype=np.float64)


def epsilon_from_error_rates(
    false_positive_rate: float | np.ndarray,
    false_negative_rate: float | np.ndarray,
    delta: float,
) -> Any:
    """Smallest epsilon that an (epsilon, delta)-DP mechanism allows for a test's error rates.

    Args:
        false_positive_rate: Probability, in [0, 1], that the test says "the example is in"
            when it is not (an array gives one epsilon per element).
        false_negative_rate: Probability, in [0, 1], that the test says "out" when it is in.
        delta: The delta of the claim, in (0, 1).

    Returns:
        `max(0, log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR))`: any
        (epsilon', delta)-DP mechanism with epsilon' below this could not have produced those
        rates (`math.inf` when a rate is 0 and the other below 1 - delta).

    Raises:
        ValueError: For a rate outside [0, 1] or delta outside (0, 1).
    """
    delta = check_open_probability("delta", delta)
    fpr = np.asarray(false_positive_rate, dtype=np.float64)
    fnr = np.asarray(false_negative_rate, dtype=np.float64)
    for name, rate in (("false_positive_rate", fpr), ("false_negative_rate", fnr)):
        if np.any(~np.isfinite(rate)) or np.any(rate < 0) or np.any(rate > 1):
            raise ValueError(f"{name} must be in [0, 1]; received {rate!r}.")
    with np.errstate(divide="ignore", invalid="ignore"):
        forward = np.log(np.maximum(1 - delta - fnr, 0.0)) - np.log(fpr)
        backward = np.log(np.maximum(1 - delta - fpr, 0.0)) - np.log(fnr)
    epsilon = np.maximum(0.0, np.fmax(np.nan_to_num(forward, nan=0.0), backward))
    epsilon = np.nan_to_num(epsilon, nan=0.0, posinf=np.inf)
    if epsilon.ndim == 0:
        return float(epsilon)
    return epsilon


METHODS = ("dp", "gdp")


@dataclasses.dataclass(frozen=True)
class ThresholdAudit:
    """Outcome of the best threshold test between scores with and without the canary.

    Attributes:
        epsilon_lower_bound: Epsilon that the mechanism must exceed (at `delta`) for the
            observed errors to be likely, with probability >= `confidence`; 0 when the test
            found nothing.
        method: "dp" (holds for any mechanism) or "gdp" (holds when the mechanism is a
            Gaussian mechanism of unknown scale, as one unsampled DP-SGD step is).
        mu_lower_bound: For "gdp", the lower confidence bound on the Gaussian DP parameter
            mu (shift over noise std); NaN for "dp".
        threshold: The test says "canary present" when `direction * score > direction *
            threshold`.
        direction: +1 (large scores mean "present") or -1.
        false_positive_rate: Measured on the evaluation trials without the canary.
        false_negative_rate: Measured on the evaluation trials with the canary.
        false_positive_rate_upper: Clopper-Pearson upper bound of the false positive rate.
        false_negative_rate_upper: Clopper-Pearson upper bound of the false negative rate.
        num_selection_trials: Trials per side used to choose the threshold.
        num_evaluation_trials: Trials per side (the smaller side) used to bound the rates.
        delta: The delta of the bound.
        confidence: Probability with which the bound holds.
    """

    epsilon_lower_bound: float
    method: str
    mu_lower_bound: float
    threshold: float
    direction: int
    false_positive_rate: float
    false_negative_rate: float
    false_positive_rate_upper: float
    false_negative_rate_upper: float
    num_selection_trials: int
    num_evaluation_trials: int
    delta: float
    confidence: float


def _error_upper_bounds(
    scores_without: np.ndarray,
    scores_with: np.ndarray,
    thresholds: np.ndarray,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per threshold: false positive and negative counts and their joint upper bounds.

    The test says "present" when score > threshold. A union bound over the two rates: each
    upper bound holds with probability (1 + confidence) / 2, both together with `confidence`.
    """
    false_positives = scores_without.size - np.searchsorted(
        np.sort(scores_without), thresholds, "right"
    )
    false_negatives = np.searchsorted(np.sort(scores_with), thresholds, "right")
    per_rate_confidence = (1 + confidence) / 2
    fpr_upper = _one_sided_upper(false_positives, scores_without.size, per_rate_confidence)
    fnr_upper = _one_sided_upper(false_negatives, scores_with.size, per_rate_confidence)
    return false_positives, false_negatives, np.atleast_1d(fpr_upper), np.atleast_1d(fnr_upper)


def gaussian_mu_from_error_rates(
    false_positive_rate: float | np.ndarray, false_negative_rate: float | np.ndarray
) -> Any:
    """Smallest Gaussian DP parameter mu whose trade-off curve allows a test's error rates.

    Args:
        false_positive_rate: In [0, 1] (array-like accepted).
        false_negative_rate: In [0, 1].

    Returns:
        `max(0, Phi^-1(1 - FPR) - Phi^-1(FNR))` (Dong, Roth and Su 2019): a mu-GDP mechanism
        with a smaller mu cannot reach both rates.
    """
    fpr = np.asarray(false_positive_rate, dtype=np.float64)
    fnr = np.asarray(false_negative_rate, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mu = stats.norm.isf(fpr) - stats.norm.ppf(fnr)
    mu = np.maximum(np.nan_to_num(mu, nan=0.0, posinf=np.inf, neginf=0.0), 0.0)
    return float(mu) if mu.ndim == 0 else mu


def _mu_to_epsilon(mu: float, delta: float) -> float:
    if mu <= 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    return gaussian_epsilon(1.0 / mu, delta)


def epsilon_lower_bound(
    scores_without: Any,
    scores_with: Any,
    delta: float,
    confidence: float = 0.95,
    selection_fraction: float = 0.5,
    method: str = "dp",
    direction: int | None = None,
) -> ThresholdAudit:
    """Empirical epsilon lower bound from the best threshold test on scalar attack scores.

    The first `selection_fraction` of each side's trials choose the threshold and direction
    whose bound is largest; the remaining trials, which played no part in that choice, give
    the reported bound. Choosing and evaluating on the same trials would overstate epsilon
    (the best of many thresholds is optimistic).

    With `method="dp"` the bound holds for every mechanism: it solves the (epsilon, delta)
    hypothesis-testing inequalities at the upper confidence bounds of both error rates. With
    `method="gdp"` the error rates give a lower bound on mu, and the bound is the exact
    epsilon at `delta` of a Gaussian mechanism with that mu (Nasr et al. 2023): far tighter
    for a given number of trials, and valid when the scores are computed from the output of
    a Gaussian mechanism of unknown noise scale and sensitivity (true of one DP-SGD step
    without sampling, of any update computed from it, and of its broken variants), not for
    arbitrary mechanisms.

    Args:
        scores_without: One test statistic per independent run on the input without the
            canary (array-like of finite numbers, at least 4).
        scores_with: One per independent run on the input with the canary (at least 4).
        delta: The delta of the bound, in (0, 1).
        confidence: Probability, in (0, 1), with which the bound holds.
        selection_fraction: Share of each side's trials used to choose the threshold, in
            (0, 1).
        method: "dp" or "gdp", see above.
        direction: None tries both directions of the test; +1 only "large score means
            canary present", -1 only the opposite (for an attack whose direction is fixed in
            advance, such as low loss meaning member).

    Returns:
        A `ThresholdAudit`.

    Raises:
        ValueError: For an argument outside its range.
    """
    without = check_finite_scores("scores_without", scores_without, 4)
    with_canary = check_finite_scores("scores_with", scores_with, 4)
    delta = check_open_probability("delta", delta)
    confidence = check_open_probability("confidence", confidence)
    selection_fraction = check_open_probability("selection_fraction", selection_fraction)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; received {method!r}.")
    if direction not in (None, 1, -1):
        raise ValueError(f"direction must be None, 1 or -1; received {direction!r}.")
    split_without = min(max(1, round(selection_fraction * without.size)), without.size - 1)
    split_with = min(max(1, round(selection_fraction * with_canary.size)), with_canary.size - 1)
    select_without, evaluate_without = without[:split_without], without[split_without:]
    select_with, evaluate_with = with_canary[:split_with], with_canary[split_with:]

    def strength(fpr_upper: np.ndarray, fnr_upper: np.ndarray) -> np.ndarray:
        if method == "gdp":
            return np.atleast_1d(gaussian_mu_from_error_rates(fpr_upper, fnr_upper))
        return np.atleast_1d(epsilon_from_error_rates(fpr_upper, fnr_upper, delta))

    signs = (1, -1) if direction is None else (direction,)
    best_strength, threshold, direction = -1.0, 0.0, signs[0]
    for sign in signs:
        thresholds = np.unique(np.concatenate([select_without, select_with])) * sign
        *_, fpr_upper, fnr_upper = _error_upper_bounds(
            sign * select_without, sign * select_with, thresholds, confidence
        )
        strengths = strength(fpr_upper, fnr_upper)
        index = int(np.argmax(strengths))
        if strengths[index] > best_strength:
            best_strength = float(strengths[index])
            threshold, direction = float(thresholds[index] * sign), sign
    false_positives, false_negatives, fpr_upper, fnr_upper = _error_upper_bounds(
        direction * evaluate_without,
        direction * evaluate_with,
        np.array([direction * threshold]),
        confidence,
    )
    value = float(strength(fpr_upper, fnr_upper)[0])
    if method == "gdp":
        mu_lower_bound, epsilon = value, _mu_to_epsilon(value, delta)
    else:
        mu_lower_bound, epsilon = math.nan, value
    return ThresholdAudit(
        epsilon_lower_bound=epsilon,
        method=method,
        mu_lower_bound=mu_lower_bound,
        threshold=threshold,
        direction=direction,
        false_positive_rate=float(false_positives[0] / evaluate_without.size),
        false_negative_rate=float(false_negatives[0] / evaluate_with.size),
        false_positive_rate_upper=float(fpr_upper[0]),
        false_negative_rate_upper=float(fnr_upper[0]),
        num_selection_trials=min(split_without, split_with),
        num_evaluation_trials=min(evaluate_without.size, evaluate_with.size),
        delta=delta,
        confidence=confidence,
    )


def gaussian_delta(noise_multiplier: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """Exact delta of the Gaussian mechanism at `epsilon` (Balle and Wang 2018, Theorem 8).

    Args:
        noise_multiplier: Noise std over the L2 sensitivity unit, > 0.
        epsilon: >= 0.
        sensitivity: L2 sensitivity in units of that unit (e.g. 2 with microbatching), > 0.

    Returns:
        `Phi(-epsilon / mu + mu / 2) - exp(epsilon) * Phi(-epsilon / mu - mu / 2)` with
        `mu = sensitivity / noise_multiplier`.

    Raises:
        ValueError: For an argument outside its range.
    """
    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    sensitivity = check_positive("sensitivity", sensitivity)
    epsilon = check_real("epsilon", epsilon, "a finite number >= 0", lambda x: 0 <= x < math.inf)
    mu = sensitivity / noise_multiplier
    # exp(eps) * Phi(x) in log space, so that large epsilons do not overflow.
    second = math.exp(epsilon + stats.norm.logcdf(-epsilon / mu - mu / 2))
    return max(0.0, float(stats.norm.cdf(-epsilon / mu + mu / 2) - second))


def gaussian_epsilon(noise_multiplier: float, delta: float, sensitivity: float = 1.0) -> float:
    """Exact epsilon of one Gaussian mechanism at `delta` (inverse of `gaussian_delta`).

    Args:
        noise_multiplier: Noise std over the L2 sensitivity unit, > 0.
        delta: In (0, 1).
        sensitivity: L2 sensitivity in those units, > 0.

    Returns:
        The smallest epsilon >= 0 with `gaussian_delta(noise_multiplier, epsilon) <= delta`.

    Raises:
        ValueError: For an argument outside its range.
    """
    delta = check_open_probability("delta", delta)
    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    sensitivity = check_positive("sensitivity", sensitivity)
    if gaussian_delta(noise_multiplier, 0.0, sensitivity) <= delta:
        return 0.0
    upper = 1.0
    while gaussian_delta(noise_multiplier, upper, sensitivity) > delta:
        upper *= 2
    return float(
        optimize.brentq(
            lambda eps: gaussian_delta(noise_multiplier, eps, sensitivity) - delta,
            0.0,
            upper,
            xtol=1e-12,
        )
    )


def gaussian_false_negative_rate(
    false_positive_rate: float | np.ndarray, noise_multiplier: float, sensitivity: float = 1.0
) -> Any:
    """Smallest false negative rate of any test at a given false positive rate, Gaussian case.

    The trade-off curve of `N(0, s^2)` against `N(sensitivity, s^2)` with `s =
    noise_multiplier` (Dong, Roth and Su 2019): `Phi(Phi^-1(1 - FPR) - mu)`, `mu =
    sensitivity / noise_multiplier`. The threshold test on the shift direction attains it.

    Args:
        false_positive_rate: In [0, 1] (array-like accepted).
        noise_multiplier: > 0.
        sensitivity: > 0.

    Returns:
        The false negative rate(s), in [0, 1].
    """
    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    sensitivity = check_positive("sensitivity", sensitivity)
    mu = sensitivity / noise_multiplier
    result = stats.norm.cdf(stats.norm.isf(np.asarray(false_positive_rate, np.float64)) - mu)
    return float(result) if np.ndim(result) == 0 else result


def accountant_epsilon_one_step(
    noise_multiplier: float, delta: float, sensitivity: float = 1.0
) -> float:
    """Epsilon that the PLD accountant claims for one unsampled Gaussian DP-SGD step.

    Args:
        noise_multiplier: Noise std over `l2_norm_clip`, > 0.
        delta: In (0, 1).
        sensitivity: Sensitivity in units of `l2_norm_clip` (2 with microbatching, as
            `pydp_r.accounting.compute_epsilon(used_microbatching=True)` assumes), > 0.

    Returns:
        `dp_accounting.pld.PLDAccountant` epsilon of `GaussianDpEvent(noise_multiplier /
        sensitivity)` at `delta` (slightly above the exact value: the PLD is discretized
        pessimistically).

    Raises:
        ValueError: For an argument outside its range.
    """
    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    delta = check_open_probability("delta", delta)
    sensitivity = check_positive("sensitivity", sensitivity)
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier / sensitivity))
    return float(accountant.get_epsilon(delta))
