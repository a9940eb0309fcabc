"""Privacy accounting for DP-SGD: epsilon from the training set-up, and the set-up from epsilon.

All numbers come from Google's `dp_accounting` (RDP or PLD accountant); nothing here re-derives
an accountant. The mechanism accounted is DP-SGD as TF Privacy states it: every step samples
each example independently with probability `sampling_rate = batch_size / n` (Poisson
sampling), clips each example's gradient to `l2_norm_clip`, adds Gaussian noise of std
`noise_multiplier * l2_norm_clip` to the sum, and releases the result; the training runs
`ceil(epochs * n / batch_size)` such steps. Adjacency is add-or-remove-one-example.
"""

from __future__ import annotations

import functools
import logging
import math
import textwrap
from collections.abc import Callable

import dp_accounting
from scipy import optimize

from pydp_r._checks import (
    ACCOUNTANTS,
    MAX_NOISE_MULTIPLIER,
    check_accountant,
    check_count,
    check_delta,
    check_epochs,
    check_n_and_batch_size,
    check_noise_multiplier,
    check_real,
    check_target_epsilon,
)


class _UnconvergedOrderFilter(logging.Filter):
    """Drops dp-accounting's notice that an RDP order did not converge and is left out.

    Leaving an order out only takes the minimum over fewer orders: the epsilon is still an
    upper bound, so the notice (one line per order per computation, hundreds in a grid
    search) says nothing a user can act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in str(record.msg)


logging.getLogger("absl").addFilter(_UnconvergedOrderFilter())

# The RDP orders of TF Privacy's classic `compute_dp_sgd_privacy`, kept so that
# `compute_dp_sgd_privacy` reproduces its numbers exactly.
CLASSIC_RDP_ORDERS = (
    [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64)) + [128, 256, 512]
)

# The most noisy steps accounted (no real training takes more; beyond it the accountants'
# time and memory grow without bound).
MAX_STEPS = 10**7

# privacy_statement leaves out the PLD figure when the RDP one is above this: no guarantee is
# left there, and the PLD accountant takes minutes (its loss distribution keeps widening).
_MAX_PLD_STATEMENT_EPSILON = 100.0

# compute_noise_multiplier's answer is within this relative distance above the exact one.
_NOISE_RELATIVE_PRECISION = 1e-4

# group_privacy_epsilon gives up (infinite epsilon) below this example-level delta.
_SMALLEST_EXAMPLE_DELTA = 1e-300


class TooManyStepsError(ValueError):
    """The set-up takes more than `MAX_STEPS` noisy steps, more than the accountants handle."""


class GroupPrivacySearchError(RuntimeError):
    """The search for the example-level delta behind a group (user-level) epsilon failed."""


def num_steps(n: int, batch_size: int, epochs: float) -> int:
    """Noisy steps of a training run: ceil(epochs * n / batch_size).

    Exact integer arithmetic when `epochs` is whole. The arguments are assumed checked
    (`check_n_and_batch_size`, `check_epochs`).

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Expected examples per step, integer in [1, n].
        epochs: Passes over the data, > 0, may be fractional.

    Returns:
        The number of steps, an integer in [1, `MAX_STEPS`].

    Raises:
        TooManyStepsError: A `ValueError` naming n, batch_size and epochs, when that is more
            than `MAX_STEPS` steps.
    """
    steps = _ceil_ratio(epochs, n, batch_size)
    if steps > MAX_STEPS:
        smallest_batch = _ceil_ratio(epochs, n, MAX_STEPS)
        raise TooManyStepsError(
            f"n={n!r}, batch_size={batch_size!r} and epochs={epochs!r} make {steps:.3g} noisy "
            f"steps (epochs * n / batch_size), more than the {MAX_STEPS:.0e} (MAX_STEPS) the "
            f"accountants handle. Use batch_size >= {smallest_batch} (at most n), or fewer "
            "epochs."
        )
    return steps


def _ceil_ratio(epochs: float, n: int, divisor: int) -> int:
    """ceil(epochs * n / divisor), exactly when epochs is whole."""
    if float(epochs).is_integer():
        return -(-int(epochs) * n // divisor)
    return math.ceil(epochs * n / divisor)


def _make_accountant(accountant: str) -> dp_accounting.PrivacyAccountant:
    if accountant == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    return dp_accounting.pld.PLDAccountant()


def _dp_sgd_event(noise_multiplier: float, sampling_rate: float | None, steps: int):
    """`steps` compositions of a Gaussian mechanism, Poisson-subsampled unless rate is None."""
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate is not None:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    return dp_accounting.SelfComposedDpEvent(event, steps)


def _composed_accountant(
    accountant: str, noise_multiplier: float, sampling_rate: float | None, steps: int
) -> dp_accounting.PrivacyAccountant:
    return _make_accountant(accountant).compose(
        _dp_sgd_event(noise_multiplier, sampling_rate, steps)
    )


def _epsilon(
    accountant: str,
    noise_multiplier: float,
    sampling_rate: float | None,
    steps: int,
    delta: float,
) -> float:
    """The accountant's epsilon at `delta`; infinite without noise.

    It may be 0: (0, delta)-DP holds when the mechanism's output distributions on neighbouring
    data sets are within total variation `delta`, which dp-accounting proves for very noisy
    or very short runs (the RDP accountant from the KL divergence, the PLD one exactly).
    """
    if noise_multiplier == 0:
        return math.inf
    composed = _composed_accountant(accountant, noise_multiplier, sampling_rate, steps)
    return float(composed.get_epsilon(delta))


def compute_epsilon(
    n: int,
    batch_size: int,
    noise_multiplier: float,
    epochs: float,
    delta: float,
    accountant: str = "rdp",
    used_microbatching: bool = False,
) -> float:
    """Epsilon of DP-SGD with Poisson sampling, example-level add-or-remove adjacency.

    Poisson sampling is what `pydp_r.data.sampling.poisson_batches` feeds `fit()`; ordinary
    shuffled batches are not Poisson sampled, so for them this number is an optimistic
    estimate (`privacy_statement` also gives the bound that holds for them).

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Expected examples per step, integer in [1, n]; the sampling rate is
            `batch_size / n`. With gradient accumulation pass the logical batch size.
        noise_multiplier: Noise std over `l2_norm_clip`, in [0, `MAX_NOISE_MULTIPLIER`]
            (1e4). 0 means no noise and gives `math.inf`.
        epochs: Passes over the data, > 0, may be fractional; the mechanism runs
            `ceil(epochs * n / batch_size)` steps.
        delta: Target delta, in (0, 1); usually below 1 / n.
        accountant: "rdp" (`dp_accounting.rdp.RdpAccountant`, its default orders) or "pld"
            (`dp_accounting.pld.PLDAccountant`, tighter, slower).
        used_microbatching: True when gradients were clipped per microbatch of more than one
            example. Adding or removing one example can then change two microbatch gradients,
            doubling the sensitivity, which is accounted as halving the noise multiplier (as
            TF Privacy's privacy statement does).

    Returns:
        Epsilon (>= 0, or `math.inf` when `noise_multiplier` is 0) at `delta`, valid for the
        release of every intermediate model. It is 0 where the accountant proves
        (0, delta)-DP, as for very noisy or very short runs at a large delta.

    Raises:
        ValueError: For an argument outside its range, an unknown accountant, or more than
            `MAX_STEPS` steps (`TooManyStepsError`).
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    accountant = check_accountant(accountant)
    if used_microbatching:
        noise_multiplier /= 2
    steps = num_steps(n, batch_size, epochs)
    return _epsilon(accountant, noise_multiplier, batch_size / n, steps, delta)


def compute_noise_multiplier(
    n: int,
    batch_size: int,
    target_epsilon: float,
    epochs: float,
    delta: float,
    accountant: str = "rdp",
    used_microbatching: bool = False,
) -> float:
    """Smallest noise multiplier whose `compute_epsilon` is at most `target_epsilon`.

    Brackets the answer by doubling or halving from 1, then lets
    `calibrate_noise_multiplier` (dp-accounting's calibration) narrow the bracket to a
    relative 1e-4; the answer errs on the safe side (its epsilon is always <= the target).

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Expected examples per step, integer in [1, n].
        target_epsilon: Epsilon budget, > 0.
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1).
        accountant: "rdp" or "pld".
        used_microbatching: As in `compute_epsilon`; the returned multiplier then accounts for
            the doubled sensitivity.

    Returns:
        The noise multiplier, in (0, `MAX_NOISE_MULTIPLIER`].

    Raises:
        ValueError: For an argument outside its range, or when `target_epsilon` is below the
            epsilon of `MAX_NOISE_MULTIPLIER` (1e4), the smallest this set-up can reach.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    target_epsilon = check_target_epsilon(target_epsilon)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    accountant = check_accountant(accountant)
    # Calibrated is the noise over the sensitivity, which microbatching doubles.
    sensitivity = 2.0 if used_microbatching else 1.0
    sampling_rate = batch_size / n
    steps = num_steps(n, batch_size, epochs)

    def epsilon_at(noise_multiplier: float) -> float:
        return _epsilon(accountant, noise_multiplier / sensitivity, sampling_rate, steps, delta)

    floor = epsilon_at(MAX_NOISE_MULTIPLIER)
    if floor > target_epsilon:
        raise ValueError(
            f"target_epsilon={target_epsilon!r} is unreachable: it is below {floor:.3g}, the "
            f"smallest epsilon that noise_multiplier <= {MAX_NOISE_MULTIPLIER:g} (the largest "
            f"accounted) gives with n={n!r}, batch_size={batch_size!r}, epochs={epochs!r} and "
            f"delta={delta!r} ({accountant!r} accountant"
            + (", microbatching" if used_microbatching else "")
            + "). To reach it, train on more examples (larger n), for fewer epochs or with a "
            "smaller batch_size, allow a larger delta, or raise target_epsilon."
        )
    lower, upper = _noise_bracket(epsilon_at, target_epsilon)
    effective_noise = calibrate_noise_multiplier(
        functools.partial(_make_accountant, accountant),
        sampling_rate,
        steps,
        target_epsilon,
        delta,
        dp_accounting.ExplicitBracketInterval(lower / sensitivity, upper / sensitivity),
        tolerance=lower / sensitivity * _NOISE_RELATIVE_PRECISION,
    )
    return min(effective_noise * sensitivity, upper)


def _noise_bracket(
    epsilon_at: Callable[[float], float], target_epsilon: float
) -> tuple[float, float]:
    """Noise multipliers (lower, upper), a factor 2 apart, missing and meeting the target.

    Doubles or halves from 1; the caller has checked that `MAX_NOISE_MULTIPLIER` meets it.
    """
    lower, upper = 1.0, 1.0
    if epsilon_at(upper) <= target_epsilon:
        lower = upper / 2
        while epsilon_at(lower) <= target_epsilon:
            lower, upper = lower / 2, lower
    else:
        while epsilon_at(upper) > target_epsilon:
            lower, upper = upper, min(2 * upper, MAX_NOISE_MULTIPLIER)
    return lower, upper


def calibrate_noise_multiplier(
    make_accountant: Callable[[], dp_accounting.PrivacyAccountant],
    sampling_rate: float | None,
    steps: int,
    target_epsilon: float,
    delta: float,
    bracket: dp_accounting.mechanism_calibration.BracketInterval,
    tolerance: float | None = None,
) -> float:
    """Smallest noise multiplier of `steps` Gaussian steps meeting `target_epsilon` at `delta`.

    The one noise calibration of pydp_r (`compute_noise_multiplier` and TF Privacy's
    `compute_noise` both call it): `dp_accounting.mechanism_calibration.calibrate_dp_mechanism`
    on `steps` self-composed Gaussian mechanisms, each Poisson-subsampled at `sampling_rate`.
    Arguments are not range-checked here; the public functions that call it check theirs.

    Args:
        make_accountant: Returns a fresh, empty `dp_accounting` accountant (e.g. an
            `RdpAccountant` over chosen orders).
        sampling_rate: Probability in (0, 1] that a step includes an example; None for
            unsampled steps.
        steps: Number of steps, integer >= 1.
        target_epsilon: Epsilon budget, >= 0.
        delta: Target delta, in [0, 1].
        bracket: Where to search: a `dp_accounting.ExplicitBracketInterval` whose lower end
            misses the target and whose upper end meets it, or a
            `dp_accounting.LowerEndpointAndGuess` that dp-accounting widens until it does.
        tolerance: Absolute distance of the answer above the exact one, > 0; None is
            dp-accounting's default (1e-6).

    Returns:
        A noise multiplier whose epsilon is at most `target_epsilon`, within `tolerance` of
        the smallest such.

    Raises:
        dp_accounting.mechanism_calibration.NoBracketIntervalFoundError: When a
            `LowerEndpointAndGuess` bracket cannot be widened to meet the target.
    """
    return float(
        dp_accounting.calibrate_dp_mechanism(
            make_accountant,
            lambda noise_multiplier: _dp_sgd_event(noise_multiplier, sampling_rate, steps),
            target_epsilon,
            delta,
            bracket,
            tol=tolerance,
        )
    )


def compute_dp_sgd_privacy(
    n: int, batch_size: int, noise_multiplier: float, epochs: float, delta: float
) -> tuple[float, float]:
    """Epsilon and optimal RDP order exactly as TF Privacy's classic `compute_dp_sgd_privacy`.

    RDP accountant over the orders `CLASSIC_RDP_ORDERS`, sampling rate `batch_size / n`,
    `ceil(epochs * n / batch_size)` Poisson-subsampled Gaussian steps, no microbatching
    correction. Kept for comparison with published figures; prefer `compute_epsilon` or
    `privacy_statement`, which state their assumptions.

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Expected examples per step, integer in [1, n].
        noise_multiplier: Noise std over `l2_norm_clip`, >= 0 (0 gives `(inf, nan)`).
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1).

    Returns:
        `(epsilon, optimal_order)`: epsilon at `delta` and the RDP order attaining it.

    Raises:
        ValueError: For an argument outside its range.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    if noise_multiplier == 0:
        return math.inf, math.nan
    # TF Privacy's own float formula, not num_steps, so that the step count matches it.
    steps = int(math.ceil(epochs * n / batch_size))
    rdp_accountant = dp_accounting.rdp.RdpAccountant(CLASSIC_RDP_ORDERS)
    rdp_accountant.compose(_dp_sgd_event(noise_multiplier, batch_size / n, steps))
    epsilon, order = rdp_accountant.get_epsilon_and_optimal_order(delta)
    return float(epsilon), float(order)


def _log_expm1(x: float) -> float:
    """log(exp(x) - 1) for x > 0, without overflow."""
    return x + math.log(-math.expm1(-x))


def _group_delta_log_factor(example_epsilon: float, group_size: int) -> float:
    """log((exp(k * eps) - 1) / (exp(eps) - 1)): how much delta grows over a group of k."""
    if example_epsilon == 0:
        return math.log(group_size)
    return _log_expm1(group_size * example_epsilon) - _log_expm1(example_epsilon)


def group_privacy_epsilon(
    example_epsilon: Callable[[float], float], delta: float, group_size: int
) -> float:
    """Epsilon at `delta` for groups of `group_size` examples, from the example-level curve.

    Group privacy (Vadhan 2017, "The complexity of differential privacy", Lemma 2.2, in the
    tighter form of its proof, which TF Privacy also uses): an (eps, d)-DP mechanism is
    (k eps, d (e^{k eps} - 1) / (e^{eps} - 1))-DP for groups of k examples. The example-level
    delta whose group delta is `delta` is searched on a log scale (bracketed, then Brent's
    method, then stepped down until the group delta is at most `delta`, so the answer errs
    on the safe side); the group epsilon is k times the example epsilon there.

    Args:
        example_epsilon: The mechanism's example-level epsilon at a given delta in (0, 1]
            (non-increasing in delta; `math.inf` where unbounded).
        delta: Target group-level delta, in (0, 1].
        group_size: k, the most examples one group (user) holds, integer >= 1.

    Returns:
        The group-level epsilon; `math.inf` when no finite bound follows this way (the group
        delta cannot be brought down to `delta`: as the example delta shrinks its epsilon,
        and with it the group factor, can grow faster).

    Raises:
        ValueError: For `delta` or `group_size` outside its range.
        GroupPrivacySearchError: When Brent's method does not converge.
    """
    delta = check_real("delta", delta, "a number in (0, 1]", lambda x: 0 < x <= 1)
    group_size = check_count("group_size", group_size)
    if group_size == 1:
        return float(example_epsilon(delta))
    target_log_delta = math.log(delta)

    @functools.cache
    def epsilon_at(example_log_delta: float) -> float:
        return float(example_epsilon(math.exp(example_log_delta)))

    def excess_log_delta(example_log_delta: float) -> float:
        """log(group delta) - log(delta) when each example gets this delta."""
        epsilon = epsilon_at(example_log_delta)
        if math.isinf(epsilon):
            return math.inf
        return example_log_delta + _group_delta_log_factor(epsilon, group_size) - target_log_delta

    # At example delta = delta the group delta is too large (the factor is >= 1). Lowering the
    # example log-delta by x lowers the group log-delta by at most x (the factor only grows as
    # the example epsilon grows), so the root lies at least `excess` below the current point.
    upper = target_log_delta
    excess = excess_log_delta(upper)
    if excess <= 0:
        return group_size * epsilon_at(upper)
    lower = upper - excess
    while True:
        excess = excess_log_delta(lower)
        if excess <= 0:
            break
        upper = lower
        lower = lower - max(excess, math.log(10))
        if not math.isfinite(excess) or lower < math.log(_SMALLEST_EXAMPLE_DELTA):
            return math.inf
    root, result = optimize.brentq(
        excess_log_delta, lower, upper, xtol=1e-10, rtol=1e-12, full_output=True, disp=False
    )
    if not result.converged:
        raise GroupPrivacySearchError(
            "The search for the example-level delta behind the group epsilon did not "
            f"converge ({result.flag}) between example deltas {math.exp(lower):.3g} and "
            f"{math.exp(upper):.3g}."
        )
    # Brent's method may land a rounding error above the root: step down until within budget.
    step = 1e-9
    while excess_log_delta(root) > 0 and root - step > lower:
        root, step = root - step, step * 4
    if excess_log_delta(root) > 0:
        root = lower
    return group_size * epsilon_at(root)


def user_epsilon(
    noise_multiplier: float,
    sampling_rate: float | None,
    steps: int,
    delta: float,
    max_examples_per_user: int,
    accountant: str = "rdp",
) -> float:
    """User-level epsilon of DP-SGD by group privacy over the example-level accountant.

    `group_privacy_epsilon` applied to the accountant's example-level (epsilon, delta) curve
    of `steps` Gaussian steps, Poisson-sampled at `sampling_rate` (as `privacy_statement`
    reports it, and as TF Privacy does with the RDP accountant).

    Args:
        noise_multiplier: Noise std over the sensitivity, in (0, `MAX_NOISE_MULTIPLIER`];
            halve it for microbatching, whose sensitivity is doubled.
        sampling_rate: Probability in (0, 1] that a step includes an example; None for each
            example used once per step (unsampled).
        steps: Number of steps, integer >= 1 (`num_steps(n, batch_size, epochs)`).
        delta: Target user-level delta, in (0, 1).
        max_examples_per_user: The most examples one user contributes, integer >= 1.
        accountant: "rdp" (default) or "pld".

    Returns:
        The user-level epsilon (`math.inf` when group privacy gives no finite bound).

    Raises:
        ValueError: For an argument outside its range.
        GroupPrivacySearchError: When the search for the example-level delta fails.
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    if sampling_rate is not None:
        sampling_rate = check_real(
            "sampling_rate", sampling_rate, "a number in (0, 1] or None", lambda x: 0 < x <= 1
        )
    steps = check_count("steps", steps)
    max_examples_per_user = check_count("max_examples_per_user", max_examples_per_user)
    accountant = check_accountant(accountant)
    if noise_multiplier == 0:
        return math.inf
    composed = _composed_accountant(accountant, noise_multiplier, sampling_rate, steps)
    return group_privacy_epsilon(
        lambda example_delta: float(composed.get_epsilon(example_delta)),
        delta,
        max_examples_per_user,
    )


class GroupPrivacyAccountant(dp_accounting.PrivacyAccountant):
    """A `dp_accounting` accountant whose epsilon is for groups of `group_size` examples.

    It composes events in an example-level accountant (RDP or PLD) and converts that
    accountant's (epsilon, delta) curve with `group_privacy_epsilon`. With `group_size` 1 it
    is the example-level accountant. Being a `PrivacyAccountant`, it calibrates noise with
    dp-accounting's own `calibrate_dp_mechanism` (`calibrate_noise_multiplier`).

    Args:
        accountant: An empty example-level `dp_accounting` accountant.
        group_size: k, the most examples one group (user) holds, integer >= 1.
    """

    def __init__(self, accountant: dp_accounting.PrivacyAccountant, group_size: int) -> None:
        super().__init__(accountant.neighboring_relation)
        self.group_size = check_count("group_size", group_size)
        self._example_accountant = accountant

    def _maybe_compose(
        self, event: dp_accounting.DpEvent, count: int, do_compose: bool
    ) -> dp_accounting.PrivacyAccountant.CompositionErrorDetails | None:
        if not self._example_accountant.supports(event):
            return self.CompositionErrorDetails(event, "unsupported by the example accountant")
        if do_compose:
            self._example_accountant.compose(event, count)
        return None

    def get_epsilon(self, target_delta: float) -> float:
        """Group epsilon at `target_delta` (`math.inf` where group privacy gives no bound)."""
        return group_privacy_epsilon(
            self._example_accountant.get_epsilon, target_delta, self.group_size
        )


def group_noise_multiplier(
    sampling_rate: float,
    steps: int,
    target_epsilon: float,
    delta: float,
    group_size: int,
    accountant: str = "rdp",
) -> float:
    """Smallest noise multiplier of DP-SGD whose group-level epsilon meets `target_epsilon`.

    The inverse of `user_epsilon`: `steps` Gaussian steps, Poisson-sampled at
    `sampling_rate`, calibrated with `calibrate_noise_multiplier` (dp-accounting's) through a
    `GroupPrivacyAccountant`. With `group_size` 1 it is the example-level calibration of
    `compute_noise_multiplier`, at a rate and step count instead of n, batch and epochs.

    Args:
        sampling_rate: Probability in (0, 1] that a step includes an example (or a user).
        steps: Number of steps, integer >= 1.
        target_epsilon: Epsilon budget for a group, > 0.
        delta: Target group-level delta, in (0, 1).
        group_size: k, the most examples one user contributes, integer >= 1.
        accountant: "rdp" (default) or "pld", the example-level accountant.

    Returns:
        The noise multiplier, in (0, `MAX_NOISE_MULTIPLIER`]; its group epsilon is at most
        `target_epsilon` and within a relative 1e-4 of the smallest such multiplier.

    Raises:
        ValueError: For an argument outside its range, or when `MAX_NOISE_MULTIPLIER` does
            not reach `target_epsilon`.
    """
    sampling_rate = check_real(
        "sampling_rate", sampling_rate, "a number in (0, 1]", lambda x: 0 < x <= 1
    )
    steps = check_count("steps", steps)
    target_epsilon = check_target_epsilon(target_epsilon)
    delta = check_delta(delta)
    group_size = check_count("group_size", group_size)
    accountant = check_accountant(accountant)
    if steps > MAX_STEPS:
        raise TooManyStepsError(
            f"steps={steps!r} is more than the {MAX_STEPS:.0e} (MAX_STEPS) the accountants handle."
        )

    def make_accountant() -> GroupPrivacyAccountant:
        return GroupPrivacyAccountant(_make_accountant(accountant), group_size)

    def epsilon_at(noise_multiplier: float) -> float:
        event = _dp_sgd_event(noise_multiplier, sampling_rate, steps)
        return make_accountant().compose(event).get_epsilon(delta)

    floor = epsilon_at(MAX_NOISE_MULTIPLIER)
    if floor > target_epsilon:
        raise ValueError(
            f"target_epsilon={target_epsilon!r} is unreachable for groups of {group_size}: it "
            f"is below {floor:.3g}, the smallest epsilon that noise_multiplier <= "
            f"{MAX_NOISE_MULTIPLIER:g} gives at sampling rate {sampling_rate:.6g}, {steps} "
            f"steps and delta={delta!r}. Sample at a lower rate, take fewer steps, allow a "
            "larger delta, or raise target_epsilon."
        )
    lower, upper = _noise_bracket(epsilon_at, target_epsilon)
    # dp-accounting's root search interpolates: give it a lower end with a finite epsilon.
    while math.isinf(epsilon_at(lower)):
        middle = math.sqrt(lower * upper)
        if epsilon_at(middle) <= target_epsilon:
            upper = middle
        else:
            lower = middle
    noise_multiplier = calibrate_noise_multiplier(
        make_accountant,
        sampling_rate,
        steps,
        target_epsilon,
        delta,
        dp_accounting.ExplicitBracketInterval(lower, upper),
        tolerance=lower * _NOISE_RELATIVE_PRECISION,
    )
    return min(noise_multiplier, upper)


def _statement_epsilon(
    accountant: str, noise_multiplier: float, sampling_rate: float | None, steps: int, delta: float
) -> float | str:
    """A cell of the statement's table: the epsilon, or "n/a" for PLD where RDP says > 100."""
    if accountant == "pld" and (
        _epsilon("rdp", noise_multiplier, sampling_rate, steps, delta) > _MAX_PLD_STATEMENT_EPSILON
    ):
        return "n/a"
    return _epsilon(accountant, noise_multiplier, sampling_rate, steps, delta)


def _table_row(label: str, cells: list[float] | list[str]) -> str:
    """One row of the statement's tables: the label, then right-aligned 10-wide cells."""
    texts = [cell if isinstance(cell, str) else f"{cell:.3f}" for cell in cells]
    return f"  {label:<50}" + "".join(f"{text:>12}" for text in texts)


def privacy_statement(
    n: int,
    batch_size: int,
    noise_multiplier: float,
    epochs: float,
    delta: float,
    used_microbatching: bool = False,
    max_examples_per_user: int | None = None,
    unit: str = "example",
) -> str:
    """Plain-text report of the DP guarantee of a DP-SGD training run and what it rests on.

    In the spirit of TF Privacy's `compute_dp_sgd_privacy_statement`: example-level epsilon
    under Poisson sampling and under one-use-per-epoch ordering, each with the RDP and the PLD
    accountant, the assumptions every number needs, and, given `max_examples_per_user`, a
    user-level epsilon by group privacy (Vadhan 2017, Lemma 2.2, in the tighter form of its
    proof, applied to the RDP accountant's example-level (epsilon, delta) curve as TF Privacy
    does).

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Expected examples per step, integer in [1, n] (the logical batch size
            with gradient accumulation).
        noise_multiplier: Noise std over `l2_norm_clip`, >= 0 (0 reports infinite epsilon).
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1), used for both example- and user-level guarantees.
        used_microbatching: True when gradients were clipped per microbatch of more than one
            example (sensitivity doubled, see `compute_epsilon`).
        max_examples_per_user: None (no user-level guarantee) or the largest number of
            examples any one person contributes, integer >= 1. With `unit="user"`: the
            examples each user brings to a step (stated, not needed for the epsilon).
        unit: "example" (default): n counts examples, the guarantee is per example, and
            `max_examples_per_user` adds a per-user bound by group privacy (the
            example-level route). "user": user-level DP-SGD (`poisson_batches(...,
            user_ids=...)`), n counts users (wearers), `batch_size` the expected users per
            step, each user's examples are clipped as one unit, and every epsilon is per
            user, with no group privacy.

    Returns:
        The statement, lines of at most 80 characters, ending with a newline.

    Raises:
        ValueError: For an argument outside its range.
    """
    if unit not in ("example", "user"):
        raise ValueError(f"unit must be one of ('example', 'user'); received {unit!r}.")
    n, batch_size = check_n_and_batch_size(n, batch_size)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    if max_examples_per_user is not None:
        max_examples_per_user = check_count("max_examples_per_user", max_examples_per_user)
    if unit == "user":
        if used_microbatching:
            raise ValueError(
                "used_microbatching must be False with unit='user': user-level DP-SGD clips "
                "each user's examples as one unit, with no microbatches of its own."
            )
        return _user_level_statement(
            n, batch_size, noise_multiplier, epochs, delta, max_examples_per_user
        )
    effective_noise = noise_multiplier / 2 if used_microbatching else noise_multiplier
    sampling_rate = batch_size / n
    steps = num_steps(n, batch_size, epochs)
    passes = math.ceil(epochs)

    def wrap(text: str) -> str:
        return textwrap.fill(text, width=80, subsequent_indent="    ")

    sections = [
        wrap(
            f"DP-SGD over n = {n} examples, batch size {batch_size} (sampling rate q = "
            f"{batch_size}/{n} = {sampling_rate:.6g}), noise multiplier {noise_multiplier:g}, "
            f"{epochs:g} epochs = {steps} steps, delta = {delta:g}, "
            + (
                "with microbatching (sensitivity doubled: accounted with noise multiplier "
                f"{effective_noise:g})."
                if used_microbatching
                else "without microbatching (each example clipped on its own)."
            )
        ),
        wrap(
            "Example-level DP, add-or-remove-one-example adjacency, at delta = "
            f"{delta:g}; every intermediate model is covered [A1, A2]:"
        )
        + "\n"
        + _table_row("", ["RDP", "PLD"])
        + "\n"
        + _table_row(
            f"Poisson sampling at rate q, {steps} steps [A3]",
            [
                _statement_epsilon(name, effective_noise, sampling_rate, steps, delta)
                for name in ACCOUNTANTS
            ],
        )
        + "\n"
        + _table_row(
            f"Each example once per epoch, {passes} epochs [A4]",
            [
                _statement_epsilon(name, effective_noise, None, passes, delta)
                for name in ACCOUNTANTS
            ],
        ),
    ]
    if max_examples_per_user is None:
        sections.append(
            wrap(
                "No user-level guarantee: give max_examples_per_user, the most examples any "
                "one person contributes, to get one."
            )
        )
    else:
        if effective_noise == 0:
            user_poisson = user_once = math.inf
        else:
            user_poisson = user_epsilon(
                effective_noise, sampling_rate, steps, delta, max_examples_per_user
            )
            user_once = user_epsilon(effective_noise, None, passes, delta, max_examples_per_user)
        sections.append(
            wrap(
                "Per user (per wearer), add-or-remove-one-user adjacency, at most "
                f"{max_examples_per_user} examples per user, at delta = {delta:g}: group "
                "privacy (Vadhan 2017, Lemma 2.2: k*eps, delta*(e^(k*eps)-1)/(e^eps-1)) over "
                "the RDP accountant's example-level guarantee (the example-level route; "
                "user-level DP-SGD, unit='user', needs no such conversion) [A1, A2, A5]:"
            )
            + "\n"
            + _table_row("Poisson sampling at rate q [A3]", [user_poisson])
            + "\n"
            + _table_row("Each example once per epoch [A4]", [user_once])
        )
    assumptions = [
        "[A1] Each example's gradient (each microbatch's, with microbatching) is clipped to "
        "L2 norm l2_norm_clip and Gaussian noise of std noise_multiplier * l2_norm_clip is "
        "added once to each step's sum: what pydp_r's DP optimizers do.",
        "[A2] The guarantee covers the release of all intermediate models (every "
        "checkpoint), not only the final one. It says nothing about data used outside "
        "DP-SGD (e.g. hyperparameter tuning, preprocessing statistics).",
        "[A3] Each step includes every example independently with probability q (Poisson "
        "sampling). model.fit() on a shuffled, batched dataset is NOT Poisson sampling, so "
        "these numbers do not formally hold for it; they do when the batches come from "
        "pydp_r.data.sampling.poisson_batches(data, sampling_rate=q).",
        "[A4] Each example is used in exactly one batch per epoch, batches in any order (e.g. "
        f"fit() on a shuffled dataset), {passes} epochs: no amplification by sampling is "
        "claimed, so this bound is weaker but holds for ordinary fit() training.",
    ]
    if max_examples_per_user is not None:
        assumptions.append(
            f"[A5] No person contributes more than {max_examples_per_user} examples. Group "
            "privacy is loose; the user-level epsilon is an upper bound, and may be infinite "
            "when the conversion fails even though a finite bound exists."
        )
    sections.append("Assumptions:\n" + "\n".join(wrap(line) for line in assumptions))
    return "\n\n".join(sections) + "\n"


def _user_level_statement(
    n_users: int,
    batch_size: int,
    noise_multiplier: float,
    epochs: float,
    delta: float,
    examples_per_user: int | None,
) -> str:
    """`privacy_statement(unit="user")` for checked arguments."""
    sampling_rate = batch_size / n_users
    steps = num_steps(n_users, batch_size, epochs)
    passes = math.ceil(epochs)

    def wrap(text: str) -> str:
        return textwrap.fill(text, width=80, subsequent_indent="    ")

    brings = (
        f"up to {examples_per_user} examples each"
        if examples_per_user is not None
        else "all their sampled examples"
    )
    sections = [
        wrap(
            f"User-level DP-SGD over n = {n_users} users (wearers), expected batch "
            f"{batch_size} users (sampling rate q = {batch_size}/{n_users} = "
            f"{sampling_rate:.6g}), {brings}, each user's examples clipped together as one "
            f"unit, noise multiplier {noise_multiplier:g}, {epochs:g} epochs = {steps} steps, "
            f"delta = {delta:g}."
        ),
        wrap(
            "Per user (per wearer): user-level DP, add-or-remove-one-user adjacency (all of a "
            f"user's examples at once), at delta = {delta:g}; every intermediate model is "
            "covered; no group privacy is needed [U1, U2]:"
        )
        + "\n"
        + _table_row("", ["RDP", "PLD"])
        + "\n"
        + _table_row(
            f"Poisson sampling of users at rate q, {steps} steps [U3]",
            [
                _statement_epsilon(name, noise_multiplier, sampling_rate, steps, delta)
                for name in ACCOUNTANTS
            ],
        )
        + "\n"
        + _table_row(
            f"Each user once per epoch, {passes} epochs [U4]",
            [
                _statement_epsilon(name, noise_multiplier, None, passes, delta)
                for name in ACCOUNTANTS
            ],
        ),
    ]
    assumptions = [
        "[U1] Each step clips the gradient of each sampled user's examples (their mean loss) "
        "to L2 norm l2_norm_clip as one unit and adds Gaussian noise of std "
        "noise_multiplier * l2_norm_clip once to the sum: what fit() does on "
        "pydp_r.data.poisson_batches(data, q, user_ids=ids, max_examples_per_user=k).",
        "[U2] The guarantee covers the release of all intermediate models. It protects "
        "everything one user contributes, however many examples; it says nothing about data "
        "used outside DP-SGD (hyperparameter tuning, preprocessing statistics).",
        "[U3] Each step includes every user independently with probability q (Poisson "
        "sampling of users). A batch cut to a fixed number of users is accounted exactly by "
        "the privacy ledger (PLD); with poisson_batches' default size the figure moves by "
        "rounding only.",
        "[U4] Each user's examples are used in exactly one batch per epoch: no amplification "
        f"by sampling is claimed, {passes} epochs.",
    ]
    sections.append("Assumptions:\n" + "\n".join(wrap(line) for line in assumptions))
    return "\n\n".join(sections) + "\n"
