"""TF Privacy's `compute_dp_sgd_privacy_lib` on `dp_accounting`: same epsilons for the same call.

Mirrors `tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib` of TF Privacy 0.9.0:
`compute_dp_sgd_privacy_statement` (example- and user-level epsilons under two data orders),
the deprecated `compute_dp_sgd_privacy` (classic `(epsilon, optimal_order)`), `AccountantType`
and `UserLevelDPComputationError`. Every epsilon is the one TF Privacy computes: the same
`dp_accounting` events, step counts and group-privacy search. The statement's wording is ours;
it states the same set-up, numbers (3 decimals) and caveats as TF Privacy's. Imports no
deep-learning framework.
"""

from __future__ import annotations

import enum
import math
import textwrap
import warnings

import dp_accounting

from pydp_r import accounting
from pydp_r._checks import check_count, check_real

__all__ = [
    "AccountantType",
    "UserLevelDPComputationError",
    "compute_dp_sgd_privacy",
    "compute_dp_sgd_privacy_statement",
]

_LINE_WIDTH = 80


# Raised when the search for the example-level delta behind a user-level bound fails; the
# search is pydp_r.accounting.group_privacy_epsilon's.
UserLevelDPComputationError = accounting.GroupPrivacySearchError


class AccountantType(enum.Enum):
    """The privacy accountant: `RDP` (Renyi DP) or `PLD` (privacy loss distributions)."""

    RDP = "RDP"
    PLD = "PLD"

    def get_accountant(self) -> dp_accounting.PrivacyAccountant:
        """A fresh `dp_accounting` accountant of this type, with its default settings."""
        if self == AccountantType.RDP:
            return dp_accounting.rdp.RdpAccountant()
        return dp_accounting.pld.PLDAccountant()


class ClassicEpsilonWarning(UserWarning):
    """Warned by `compute_dp_sgd_privacy`: its epsilon rests on assumptions it does not state."""


def _check_num_epochs(num_epochs: float) -> float:
    return check_real("num_epochs", num_epochs, "a finite number > 0", lambda v: 0 < v < math.inf)


def _check_noise_multiplier(noise_multiplier: float) -> float:
    return check_real(
        "noise_multiplier", noise_multiplier, "a finite number >= 0", lambda v: 0 <= v < math.inf
    )


def _check_delta(name: str, delta: float) -> float:
    return check_real(name, delta, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def _check_sampling_probability(probability: float | None) -> float | None:
    if probability is None:
        return None
    return check_real(
        "poisson_subsampling_probability", probability, "a number in (0, 1]", lambda v: 0 < v <= 1
    )


def _compute_dp_sgd_example_privacy(
    num_epochs: float,
    noise_multiplier: float,
    example_delta: float,
    used_microbatching: bool = True,
    poisson_subsampling_probability: float | None = None,
    accountant_type: AccountantType = AccountantType.RDP,
) -> float:
    """Example-level epsilon (add-or-remove-one-example), covering every checkpoint.

    Args:
        num_epochs: Passes over the data, > 0, may be fractional.
        noise_multiplier: Noise std over the L2 sensitivity (the clip norm), >= 0.
        example_delta: Target delta, in [0, 1].
        used_microbatching: True when microbatches of more than one example were clipped: the
            sensitivity doubles, accounted as half the noise multiplier.
        poisson_subsampling_probability: None for each example once per epoch
            (`ceil(num_epochs)` unsampled Gaussian releases), or the probability q in (0, 1]
            that a step includes an example (`ceil(num_epochs / q)` Poisson-sampled steps).
        accountant_type: `AccountantType.RDP` or `AccountantType.PLD`.

    Returns:
        Epsilon at `example_delta` (`math.inf` when it is unbounded).

    Raises:
        ValueError: For an argument outside its range.
    """
    num_epochs = _check_num_epochs(num_epochs)
    noise_multiplier = _check_noise_multiplier(noise_multiplier)
    example_delta = _check_delta("example_delta", example_delta)
    sampling_probability = _check_sampling_probability(poisson_subsampling_probability)
    if used_microbatching:
        noise_multiplier /= 2
    step = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_probability is None:
        num_steps = int(math.ceil(num_epochs))
    else:
        step = dp_accounting.PoissonSampledDpEvent(sampling_probability, step)
        # TF Privacy's float expression for the step count, so that both count the same steps.
        num_steps = int(math.ceil(num_epochs / sampling_probability))
    training = dp_accounting.SelfComposedDpEvent(step, num_steps)
    return float(accountant_type.get_accountant().compose(training).get_epsilon(example_delta))


def _compute_dp_sgd_user_privacy(
    num_epochs: float,
    noise_multiplier: float,
    user_delta: float,
    max_examples_per_user: int,
    used_microbatching: bool = True,
    poisson_subsampling_probability: float | None = None,
    accountant_type: AccountantType = AccountantType.RDP,
) -> float:
    """User-level epsilon (add-or-remove-one-user) by group privacy, covering every checkpoint.

    `pydp_r.accounting.group_privacy_epsilon` (Vadhan 2017, Lemma 2.2, in the tighter form of
    its proof) over `_compute_dp_sgd_example_privacy`'s (epsilon, delta) curve: the
    example-level delta whose group delta is `user_delta`, and k times its epsilon.

    Args:
        num_epochs, noise_multiplier, used_microbatching, poisson_subsampling_probability,
        accountant_type: As in `_compute_dp_sgd_example_privacy`.
        user_delta: Target user-level delta, in [0, 1] (> 0 when max_examples_per_user > 1).
        max_examples_per_user: k, the most examples one user contributes, integer >= 1.

    Returns:
        The user-level epsilon; `math.inf` (with a warning, as TF Privacy logs one) when no
        finite bound follows this way.

    Raises:
        ValueError: For an argument outside its range.
        UserLevelDPComputationError: When the line search does not converge.
    """
    num_epochs = _check_num_epochs(num_epochs)
    noise_multiplier = _check_noise_multiplier(noise_multiplier)
    user_delta = _check_delta("user_delta", user_delta)
    max_examples_per_user = check_count("max_examples_per_user", max_examples_per_user)

    def example_epsilon(example_delta: float) -> float:
        return _compute_dp_sgd_example_privacy(
            num_epochs,
            noise_multiplier,
            example_delta,
            used_microbatching,
            poisson_subsampling_probability,
            accountant_type,
        )

    if max_examples_per_user == 1:
        return example_epsilon(user_delta)
    if user_delta == 0:
        raise ValueError(
            "user_delta must be a number in (0, 1] when max_examples_per_user > 1; received 0."
        )
    epsilon = accounting.group_privacy_epsilon(example_epsilon, user_delta, max_examples_per_user)
    if math.isinf(epsilon):
        warnings.warn(
            "No finite user-level epsilon follows by group privacy with "
            f"max_examples_per_user={max_examples_per_user}.",
            stacklevel=2,
        )
    return epsilon


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=_LINE_WIDTH)


def _epsilon_rows(once_per_epoch: str, poisson: str) -> str:
    return (
        f"    each example used once per epoch, any order:       {once_per_epoch:>12}\n"
        f"    Poisson sampling of each step's batch (*):         {poisson:>12}"
    )


def _epsilon_cell(epsilon: float) -> str:
    return "    inf (**)" if math.isinf(epsilon) else f"{epsilon:12.3f}"


def compute_dp_sgd_privacy_statement(
    number_of_examples: int,
    batch_size: int,
    num_epochs: float,
    noise_multiplier: float,
    delta: float,
    used_microbatching: bool = True,
    max_examples_per_user: int | None = None,
    accountant_type: AccountantType = AccountantType.RDP,
) -> str:
    """Plain-text statement of the DP guarantee of a DP-SGD run, with TF Privacy 0.9.0's numbers.

    Example-level epsilon with each example used once per epoch (`ceil(num_epochs)` Gaussian
    releases) and under Poisson sampling at rate `batch_size / number_of_examples`; with
    `max_examples_per_user` (RDP only, as in TF Privacy) the same two by group privacy.

    Args:
        number_of_examples: Training examples (rows of a batch), integer >= 1.
        batch_size: Examples per step, however grouped into microbatches, integer in
            [1, number_of_examples].
        num_epochs: Passes over the data, > 0, may be fractional.
        noise_multiplier: Noise std over the clip norm, >= 0, constant over training.
        delta: Target delta, in [0, 1], for example- and user-level guarantees.
        used_microbatching: True (TF Privacy's default) when microbatches hold more than one
            example, which doubles the sensitivity; False for per-example clipping (pydp_r's
            default, `num_microbatches=None`, or `num_microbatches == batch_size`).
        max_examples_per_user: None, or the most examples one user contributes (integer >= 1)
            to add a user-level guarantee.
        accountant_type: `AccountantType.RDP` (default) or `AccountantType.PLD`.

    Returns:
        The statement: paragraphs of at most 80 characters, ending with a newline.

    Raises:
        ValueError: For an argument outside its range.
    """
    number_of_examples = check_count("number_of_examples", number_of_examples)
    batch_size = check_count("batch_size", batch_size)
    if batch_size > number_of_examples:
        raise ValueError(
            "batch_size must be an integer in [1, number_of_examples] = "
            f"[1, {number_of_examples}]; received {batch_size!r}."
        )
    if max_examples_per_user is not None:
        max_examples_per_user = check_count("max_examples_per_user", max_examples_per_user)
    accountant_type = AccountantType(accountant_type)
    sampling_probability = batch_size / number_of_examples
    per_user = (
        "no bound on the number of examples per user"
        if max_examples_per_user is None
        else f"at most {max_examples_per_user} examples per user"
    )
    paragraphs = [
        _paragraph(
            f"DP-SGD over {number_of_examples} examples, {batch_size} examples per step, "
            f"noise multiplier {noise_multiplier} for {num_epochs} epochs, "
            f"{'with' if used_microbatching else 'without'} microbatching, {per_user}."
        ),
        _paragraph(
            "The guarantee covers the release of every model checkpoint, not only the final model."
        ),
    ]

    def both_orders(epsilon_of) -> tuple[float, float]:
        return epsilon_of(None), epsilon_of(sampling_probability)

    example_epsilons = both_orders(
        lambda probability: _compute_dp_sgd_example_privacy(
            num_epochs, noise_multiplier, delta, used_microbatching, probability, accountant_type
        )
    )
    paragraphs.append(
        _paragraph(
            f"Example-level DP (add-or-remove-one-example adjacency), delta = {delta}, "
            f"{accountant_type.value} accountant; epsilon:"
        )
        + "\n"
        + _epsilon_rows(*(f"{epsilon:12.3f}" for epsilon in example_epsilons))
    )
    any_infinite_user_epsilon = False
    if max_examples_per_user is None:
        paragraphs.append(
            _paragraph(
                "No user-level guarantee: it needs a bound on the number of examples any one "
                "user contributes (max_examples_per_user)."
            )
        )
    elif accountant_type == AccountantType.PLD:
        paragraphs.append(
            _paragraph(
                "No user-level guarantee with the PLD accountant (its group-privacy conversion "
                "can be overly pessimistic); use the RDP accountant for one."
            )
        )
    else:
        user_epsilons = both_orders(
            lambda probability: _compute_dp_sgd_user_privacy(
                num_epochs,
                noise_multiplier,
                delta,
                max_examples_per_user,
                used_microbatching,
                probability,
                accountant_type,
            )
        )
        any_infinite_user_epsilon = any(math.isinf(epsilon) for epsilon in user_epsilons)
        paragraphs.append(
            _paragraph(
                f"User-level DP (add-or-remove-one-user adjacency), delta = {delta}, "
                f"{accountant_type.value} accountant and group privacy; epsilon:"
            )
            + "\n"
            + _epsilon_rows(*(_epsilon_cell(epsilon) for epsilon in user_epsilons))
        )
    paragraphs.append(
        _paragraph(
            "(*) Training pipelines rarely sample batches this way. For randomly shuffled "
            "data the true epsilon is believed to lie nearer this value than the "
            "once-per-epoch bound, which holds for any order of the data."
        )
    )
    if any_infinite_user_epsilon:
        paragraphs.append(
            _paragraph(
                "(**) A finite example-level epsilon implies a finite user-level one for any "
                "max_examples_per_user, but the conversion used here is not exact and can "
                "fail to give a finite upper bound."
            )
        )
    return "\n\n".join(paragraphs) + "\n"


def compute_dp_sgd_privacy(
    n: int, batch_size: int, noise_multiplier: float, epochs: float, delta: float
) -> tuple[float, float]:
    """Deprecated in TF Privacy: epsilon and optimal RDP order of DP-SGD with Poisson sampling.

    The classic number: RDP accountant over TF Privacy's fixed orders, sampling rate
    `batch_size / n`, `ceil(epochs * n / batch_size)` steps, no microbatching correction
    (`pydp_r.compute_dp_sgd_privacy`). Warns `ClassicEpsilonWarning`, since it neither
    doubles the sensitivity for microbatching nor holds for shuffled (not Poisson-sampled)
    batches; prefer `compute_dp_sgd_privacy_statement`.

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Examples per step, integer in [1, n].
        noise_multiplier: Noise std over the clip norm, >= 0.
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1).

    Returns:
        `(epsilon, optimal_order)`.

    Raises:
        ValueError: For an argument outside its range.
    """
    warnings.warn(
        "compute_dp_sgd_privacy is deprecated (as in TF Privacy): its epsilon ignores the "
        "doubled sensitivity of microbatching and assumes Poisson sampling, which fit() on "
        "shuffled batches does not do. Use compute_dp_sgd_privacy_statement, which states "
        "both bounds, or dp_accounting directly for other assumptions.",
        ClassicEpsilonWarning,
        stacklevel=2,
    )
    return accounting.compute_dp_sgd_privacy(n, batch_size, noise_multiplier, epochs, delta)
