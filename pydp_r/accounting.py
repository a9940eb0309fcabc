"""Privacy accounting for DP-SGD: epsilon from the training set-up, and the set-up from epsilon.

All numbers come from Google's `dp_accounting` (RDP or PLD accountant); nothing here re-derives
an accountant. The mechanism accounted is DP-SGD as TF Privacy states it: every step samples
each example independently with probability `sampling_rate = batch_size / n` (Poisson
sampling), clips each example's gradient to `l2_norm_clip`, adds Gaussian noise of std
`noise_multiplier * l2_norm_clip` to the sum, and releases the result; the training runs
`ceil(epochs * n / batch_size)` such steps. Adjacency is add-or-remove-one-example.
"""

from __future__ import annotations

import math
import textwrap

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
    check_target_epsilon,
)

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

# compute_noise_multiplier stops bisecting when upper / lower <= 1 + this.
_NOISE_RELATIVE_PRECISION = 1e-4


def _num_steps(n: int, batch_size: int, epochs: float) -> int:
    """ceil(epochs * n / batch_size), in exact integer arithmetic when epochs is whole.

    Raises:
        ValueError: Naming epochs, when that is more than `MAX_STEPS` steps.
    """
    if float(epochs).is_integer():
        steps = -(-int(epochs) * n // batch_size)
    else:
        steps = math.ceil(epochs * n / batch_size)
    if steps > MAX_STEPS:
        raise ValueError(
            f"epochs must give at most {MAX_STEPS:.0e} steps (epochs * n / batch_size); "
            f"received epochs={epochs!r}, i.e. {steps} steps."
        )
    return steps


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
    if noise_multiplier == 0:
        return math.inf
    composed = _composed_accountant(accountant, noise_multiplier, sampling_rate, steps)
    epsilon = float(composed.get_epsilon(delta))
    if not epsilon > 0:
        raise ValueError(
            f"the {accountant!r} accountant returned epsilon {epsilon!r} for noise_multiplier="
            f"{noise_multiplier!r}: a rounding artefact, not perfect privacy. Use a smaller "
            "noise_multiplier."
        )
    return epsilon


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
        noise_multiplier: Noise std over `l2_norm_clip`, >= 0. 0 means no noise and gives
            `math.inf`.
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
        release of every intermediate model.

    Raises:
        ValueError: For an argument outside its range, or an unknown accountant.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    accountant = check_accountant(accountant)
    if used_microbatching:
        noise_multiplier /= 2
    steps = _num_steps(n, batch_size, epochs)
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

    Brackets the answer by doubling or halving from 1, then bisects on a log scale until the
    bracket's upper end is within a relative 1e-4 of its lower end, and returns the upper end
    (so its epsilon is always <= the target).

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
        The noise multiplier (> 0).

    Raises:
        ValueError: For an argument outside its range, or when even a noise multiplier of
            `MAX_NOISE_MULTIPLIER` (1e4) does not bring epsilon down to `target_epsilon`.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    target_epsilon = check_target_epsilon(target_epsilon)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    accountant = check_accountant(accountant)
    sensitivity = 2.0 if used_microbatching else 1.0
    sampling_rate = batch_size / n
    steps = _num_steps(n, batch_size, epochs)

    def within_budget(noise_multiplier: float) -> bool:
        epsilon = _epsilon(accountant, noise_multiplier / sensitivity, sampling_rate, steps, delta)
        return epsilon <= target_epsilon

    lower, upper = 1.0, 1.0
    if within_budget(upper):
        lower = upper / 2
        while within_budget(lower):
            lower, upper = lower / 2, lower
    else:
        while not within_budget(upper):
            if upper >= MAX_NOISE_MULTIPLIER:
                raise ValueError(
                    f"target_epsilon={target_epsilon!r} is unreachable: even noise_multiplier="
                    f"{MAX_NOISE_MULTIPLIER:g} gives a larger epsilon at delta={delta!r} with the "
                    f"{accountant!r} accountant. Use a target_epsilon > 0 that is larger, or a "
                    "larger delta, fewer epochs or a smaller batch_size."
                )
            lower, upper = upper, min(2 * upper, MAX_NOISE_MULTIPLIER)
    while upper / lower > 1 + _NOISE_RELATIVE_PRECISION:
        middle = math.sqrt(lower * upper)
        if within_budget(middle):
            upper = middle
        else:
            lower = middle
    return upper


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
    # TF Privacy's own float formula, not _num_steps, so that the step count matches it.
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


def _user_epsilon(
    noise_multiplier: float,
    sampling_rate: float | None,
    steps: int,
    user_delta: float,
    max_examples_per_user: int,
) -> float:
    """User-level epsilon by group privacy (Vadhan 2017, Lemma 2.2) over RDP example-level DP.

    An (eps, d)-DP mechanism is (k eps, d (e^{k eps} - 1) / (e^{eps} - 1))-DP for groups of k
    examples (the tighter form from the lemma's proof, which TF Privacy also uses). The
    example-level delta is searched (on a log scale) so that the group's delta equals
    `user_delta`; the user epsilon is then k times the example epsilon at that delta.
    """
    composed = _composed_accountant("rdp", noise_multiplier, sampling_rate, steps)
    if max_examples_per_user == 1:
        return float(composed.get_epsilon(user_delta))
    target_log_delta = math.log(user_delta)

    def example_epsilon(example_log_delta: float) -> float:
        return float(composed.get_epsilon(math.exp(example_log_delta)))

    def excess_log_delta(example_log_delta: float) -> float:
        epsilon = example_epsilon(example_log_delta)
        if math.isinf(epsilon):
            return math.inf
        group_factor = _group_delta_log_factor(epsilon, max_examples_per_user)
        return example_log_delta + group_factor - target_log_delta

    # At example delta = user delta the group delta is too large (the factor is >= 1). Lowering
    # the example log-delta by x lowers the group log-delta by at most x (the factor only grows
    # as the example epsilon grows), so the root lies at least `excess` below the current point.
    upper = target_log_delta
    excess = excess_log_delta(upper)
    if excess <= 0:
        return max_examples_per_user * example_epsilon(upper)
    lower = upper - excess
    smallest_log_delta = math.log(1e-300)
    while True:
        excess = excess_log_delta(lower)
        if excess <= 0:
            break
        upper = lower
        lower = lower - max(excess, math.log(10))
        if not math.isfinite(excess) or lower < smallest_log_delta:
            # Group delta cannot be brought down to user_delta: no finite bound this way.
            return math.inf
    root = optimize.brentq(excess_log_delta, lower, upper, xtol=1e-10, rtol=1e-12)
    # brentq may land a rounding error above the root: step down until the budget is met.
    step = 1e-9
    while excess_log_delta(root) > 0 and root - step > lower:
        root, step = root - step, step * 4
    if excess_log_delta(root) > 0:
        root = lower
    return max_examples_per_user * example_epsilon(root)


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
            examples any one person contributes, integer >= 1.

    Returns:
        The statement, lines of at most 80 characters, ending with a newline.

    Raises:
        ValueError: For an argument outside its range.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    if max_examples_per_user is not None:
        max_examples_per_user = check_count("max_examples_per_user", max_examples_per_user)
    effective_noise = noise_multiplier / 2 if used_microbatching else noise_multiplier
    sampling_rate = batch_size / n
    steps = _num_steps(n, batch_size, epochs)
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
            user_poisson = _user_epsilon(
                effective_noise, sampling_rate, steps, delta, max_examples_per_user
            )
            user_once = _user_epsilon(effective_noise, None, passes, delta, max_examples_per_user)
        sections.append(
            wrap(
                "User-level DP, add-or-remove-one-user adjacency, at most "
                f"{max_examples_per_user} examples per user, at delta = {delta:g}: group "
                "privacy (Vadhan 2017, Lemma 2.2: k*eps, delta*(e^(k*eps)-1)/(e^eps-1)) over "
                "the RDP accountant's example-level guarantee [A1, A2, A5]:"
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
