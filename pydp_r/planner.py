"""Plan a DP-SGD run: batch size, noise multiplier and steps for a target epsilon.

Given the number of training examples, the privacy budget (epsilon at delta) and the epochs
one can afford, `plan_dp_training` calibrates the noise multiplier for each candidate batch
size with `pydp_r.accounting.compute_noise_multiplier` (Poisson sampling, RDP or PLD
accountant) and picks the batch whose steps are least noisy among those that still leave
enough steps to train.

How noisy a step is: the *noise-to-signal ratio* of a plan is

    noise_to_signal = noise_multiplier / batch_size
                    = noise std / (batch_size * l2_norm_clip),

the standard deviation (per coordinate) of the noise in the averaged clipped gradient, in
units of the clipping bound, which is the largest norm one example's clipped gradient can
have. At a fixed epsilon and number of epochs the calibrated noise multiplier grows roughly
like the square root of the batch size, so this ratio falls like 1 / sqrt(batch_size): large
batches with calibrated noise are less noisy per step (De et al. 2022), at the price of fewer
steps for the same epochs. The planner therefore takes the largest candidate batch that keeps
at least `min_steps` steps.

Per wearer (`unit="user"`): data where each person (a wearer) holds many examples can be
trained with a guarantee per person in two ways, which the planner compares at the same
sampling rate q, steps and epochs, for wearers who each hold at least
`max_examples_per_user` = k examples:

- user-level DP-SGD (`poisson_batches(..., user_ids=, max_examples_per_user=k)`): each step
  samples every wearer with probability q; a sampled wearer brings k examples, clipped
  together as one unit, so the accountant counts wearers: noise-to-signal
  `noise_multiplier / (q * n_users)`;
- example-level DP-SGD on at most k examples per wearer (`privacy_unit="example"`): each
  step samples every example with probability q, and the per-wearer epsilon follows by group
  privacy over k examples (`accounting.user_epsilon`): noise-to-signal
  `noise_multiplier / (q * k * n_users)`, with a noise multiplier calibrated to the group
  epsilon (`accounting.group_noise_multiplier`).

Of n wearers, epsilon and noise-to-signal, give two and the plan answers the third: the noise
for n wearers at epsilon (as for examples), the wearers needed for epsilon at a given
noise-to-signal, or the epsilon of n wearers at a given noise-to-signal; the other route
answers the same question, and the plan says which is better and by what factor. Both
routes use Poisson sampling without truncation; `poisson_batches`' default fixed batch size
is exceeded with probability at most 1e-6, which the ledger accounts exactly (PLD) and which
moves the figure by rounding only. The noise-to-signal ratio is a proxy for how much each
step learns; it does not see that a wearer's k examples are averaged before clipping in the
user-level route.

This module imports neither TensorFlow nor Keras, so the command line (`pydp-r plan`) and R's
`plan_dp_training()` stay quick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydp_r import _checks as checks
from pydp_r import accounting
from pydp_r._checks import check_count

# Steps a run should keep at least, by default. Measured on the heart-rate demo (3,378
# training sequences, 20 epochs, epsilon 2, validation MAE over two seeds): batches of 128,
# 256 and 512 (528, 264 and 132 steps) trained about equally well (7.1, 6.4, 6.4 bpm), while
# 66 steps (batch 1024, or batch 512 for 10 epochs) lost 5 bpm (11.5 and 11.1 bpm).
DEFAULT_MIN_STEPS = 150

# Smallest default candidate batch size: below it DP-SGD's steps are very noisy whatever
# the budget.
_SMALLEST_DEFAULT_BATCH = 16


@dataclass(frozen=True)
class PlanCandidate:
    """One batch size with its calibrated noise.

    Attributes:
        batch_size: Expected examples per step (Poisson sampling rate times n), in [1, n].
        noise_multiplier: Smallest noise std over `l2_norm_clip` meeting the target, > 0.
        steps: Noisy steps the run takes, `ceil(epochs * n / batch_size)`.
        epsilon: Epsilon of this set-up at the plan's delta, <= the target.
        noise_to_signal: `noise_multiplier / batch_size` (see the module docstring).
    """

    batch_size: int
    noise_multiplier: float
    steps: int
    epsilon: float
    noise_to_signal: float


@dataclass(frozen=True)
class DPTrainingPlan:
    """A suggested DP-SGD set-up and the alternatives it was chosen from.

    Attributes:
        n: Number of training examples.
        target_epsilon: The epsilon budget at `delta`.
        epochs: Passes over the data.
        delta: Target delta.
        accountant: "rdp" or "pld", the accountant that calibrated the noise.
        min_steps: Fewest steps a chosen plan should keep.
        batch_size, noise_multiplier, steps, epsilon, noise_to_signal: Those of the chosen
            candidate (see `PlanCandidate`).
        sampling_rate: `batch_size / n`, what to pass to `pydp_r.data.poisson_batches`.
        candidates: Every candidate considered, by increasing batch size.
        too_many_steps: Batch sizes left out because they make more than
            `pydp_r.accounting.MAX_STEPS` steps, by increasing size.
    """

    n: int
    target_epsilon: float
    epochs: float
    delta: float
    accountant: str
    min_steps: int
    batch_size: int
    noise_multiplier: float
    steps: int
    epsilon: float
    noise_to_signal: float
    sampling_rate: float
    candidates: tuple[PlanCandidate, ...]
    too_many_steps: tuple[int, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"DP-SGD plan for n = {self.n} examples, epsilon <= {self.target_epsilon:g} at "
            f"delta = {self.delta:g}, {self.epochs:g} epochs ({self.accountant.upper()} "
            "accountant, Poisson sampling):",
            f"  batch size        {self.batch_size} (sampling rate {self.sampling_rate:.4g})",
            f"  noise multiplier  {self.noise_multiplier:.4g}",
            f"  steps             {self.steps}",
            f"  epsilon           {self.epsilon:.4g}",
            f"  noise-to-signal   {self.noise_to_signal:.3g} (noise std / (batch size * clip))",
        ]
        if self.steps < self.min_steps:
            lines.append(
                f"  No candidate keeps {self.min_steps} steps; this is the one with the most. "
                "Train more epochs or allow smaller batches."
            )
        lines += [
            "",
            f"  {'batch':>10} {'noise mult.':>12} {'steps':>8} {'epsilon':>8} {'noise/signal':>13}",
        ]
        for candidate in self.candidates:
            marker = "  <- chosen" if candidate.batch_size == self.batch_size else ""
            lines.append(
                f"  {candidate.batch_size:>10} {candidate.noise_multiplier:>12.4g} "
                f"{candidate.steps:>8} {candidate.epsilon:>8.4g} "
                f"{candidate.noise_to_signal:>13.3g}{marker}"
            )
        if self.too_many_steps:
            lines.append(
                f"  Left out: batch sizes {list(self.too_many_steps)}, which make more than "
                f"{accounting.MAX_STEPS:.0e} steps (more than the accountants handle)."
            )
        lines += [
            "",
            "Chosen: the least noisy step (smallest noise-to-signal) among batches that keep "
            f"at least {self.min_steps} steps. Feed fit() with pydp_r.data.poisson_batches("
            f"data, sampling_rate={self.sampling_rate:.4g}) so that this epsilon holds.",
        ]
        return "\n".join(lines)


USER = "user"
EXAMPLE = "example"
UNITS = (EXAMPLE, USER)

# What a per-wearer plan solves for, given the other two of (n wearers, epsilon, noise).
SOLVE_NOISE = "noise_to_signal"
SOLVE_USERS = "n_users"
SOLVE_EPSILON = "epsilon"


@dataclass(frozen=True)
class PrivacyRoute:
    """One way to train with a per-wearer guarantee, with its figures.

    Attributes:
        name: "user" (user-level DP-SGD: wearers sampled, each clipped as one unit) or
            "example" (examples sampled, at most k per wearer; group privacy per wearer).
        n_users: Wearers trained on.
        sampling_rate: Probability q that a step includes a wearer ("user") or an example
            ("example"), what to pass to `poisson_batches`.
        expected_batch_size: Expected units per step: wearers ("user"), examples ("example").
        noise_multiplier: Noise std over `l2_norm_clip`.
        steps: Noisy steps.
        user_epsilon: Epsilon per wearer at the plan's delta.
        noise_to_signal: `noise_multiplier / expected_batch_size`.
    """

    name: str
    n_users: int
    sampling_rate: float
    expected_batch_size: float
    noise_multiplier: float
    steps: int
    user_epsilon: float
    noise_to_signal: float


@dataclass(frozen=True)
class UserLevelPlan:
    """A per-wearer DP-SGD plan: user-level DP-SGD, and the example-level route beside it.

    Attributes:
        solved_for: What the plan answered: "noise_to_signal" (n wearers and epsilon given),
            "n_users" (epsilon and noise-to-signal given) or "epsilon" (n wearers and
            noise-to-signal given).
        max_examples_per_user: k, examples each wearer brings (at least this many each).
        target_epsilon: The epsilon budget given, or None.
        target_noise_to_signal: The noise-to-signal given, or None.
        epochs: Passes over the data (over the wearers for user-level DP-SGD).
        delta: Target delta, per wearer.
        accountant: "rdp" or "pld".
        min_steps: Fewest steps a plan should keep.
        user_level: User-level DP-SGD's figures.
        example_level: The example-level route's figures, at the same rate and steps, for
            the same question.
        candidates: The user-level candidates (batch sizes in wearers) the plan was chosen
            from; empty when it solved for the number of wearers.
        too_many_steps: Wearer batch sizes left out for making more than `MAX_STEPS` steps.
    """

    solved_for: str
    max_examples_per_user: int
    target_epsilon: float | None
    target_noise_to_signal: float | None
    epochs: float
    delta: float
    accountant: str
    min_steps: int
    user_level: PrivacyRoute
    example_level: PrivacyRoute
    candidates: tuple[PlanCandidate, ...] = ()
    too_many_steps: tuple[int, ...] = ()

    @property
    def sampling_rate(self) -> float:
        """User-level DP-SGD's rate of wearers, for `poisson_batches(sampling_rate=...)`."""
        return self.user_level.sampling_rate

    @property
    def _answers(self) -> tuple[float, float]:
        """The quantity solved for, (user-level, example-level): smaller is better."""
        return tuple(
            float(getattr(route, _ROUTE_FIELD[self.solved_for]))
            for route in (self.user_level, self.example_level)
        )

    @property
    def better(self) -> str:
        """The route with the better answer: "user" or "example" ("user" on a tie)."""
        user, example = self._answers
        return EXAMPLE if example < user else USER

    @property
    def advantage(self) -> float:
        """How many times the worse route's answer is the better one's (>= 1): its
        noise-to-signal, wearers needed, or epsilon."""
        user, example = self._answers
        low, high = sorted((user, example))
        if high == low:
            return 1.0
        return math.inf if low == 0 else high / low

    def __str__(self) -> str:
        user, example = self.user_level, self.example_level
        k = self.max_examples_per_user
        if self.solved_for == SOLVE_NOISE:
            question = (
                f"the least noisy steps for {user.n_users} wearers within epsilon "
                f"{self.target_epsilon:g}"
            )
        elif self.solved_for == SOLVE_USERS:
            question = (
                f"the wearers needed for epsilon {self.target_epsilon:g} at noise-to-signal "
                f"{self.target_noise_to_signal:g}"
            )
        else:
            question = (
                f"the epsilon of {user.n_users} wearers at noise-to-signal "
                f"{self.target_noise_to_signal:g}"
            )
        lines = [
            f"Per-wearer DP-SGD plan: {question}, at delta = {self.delta:g} per wearer, "
            f"{self.epochs:g} epochs, {k} examples per wearer ({self.accountant.upper()} "
            "accountant, Poisson sampling):",
            "",
            f"  {'':<22}{'user-level DP-SGD':>22}{'example-level + group':>24}",
        ]

        def row(label: str, first: str, second: str) -> str:
            return f"  {label:<22}{first:>22}{second:>24}"

        lines += [
            row("wearers", f"{user.n_users}", f"{example.n_users}"),
            row("sampled per step", "wearers", "examples"),
            row("sampling rate", f"{user.sampling_rate:.4g}", f"{example.sampling_rate:.4g}"),
            row(
                "expected batch",
                f"{user.expected_batch_size:.4g} wearers",
                f"{example.expected_batch_size:.4g} examples",
            ),
            row(
                "noise multiplier",
                f"{user.noise_multiplier:.4g}",
                f"{example.noise_multiplier:.4g}",
            ),
            row("steps", f"{user.steps}", f"{example.steps}"),
            row("epsilon per wearer", f"{user.user_epsilon:.4g}", f"{example.user_epsilon:.4g}"),
            row("noise-to-signal", f"{user.noise_to_signal:.3g}", f"{example.noise_to_signal:.3g}"),
            "",
        ]
        what = {
            SOLVE_NOISE: "noise-to-signal (and wearers needed for equal noise)",
            SOLVE_USERS: "wearers needed",
            SOLVE_EPSILON: "epsilon per wearer",
        }[self.solved_for]
        winner = "user-level DP-SGD" if self.better == USER else "example-level + group privacy"
        lines.append(
            f"Better: {winner}, by a factor {self.advantage:.3g} in {what}, at the same rate "
            f"and {user.steps} steps."
        )
        if self.candidates:
            lines += [
                "",
                "User-level candidates (batch in wearers):",
                f"  {'batch':>10} {'noise mult.':>12} {'steps':>8} {'epsilon':>8} "
                f"{'noise/signal':>13}",
            ]
            for candidate in self.candidates:
                chosen = candidate.batch_size == round(user.expected_batch_size)
                lines.append(
                    f"  {candidate.batch_size:>10} {candidate.noise_multiplier:>12.4g} "
                    f"{candidate.steps:>8} {candidate.epsilon:>8.4g} "
                    f"{candidate.noise_to_signal:>13.3g}" + ("  <- chosen" if chosen else "")
                )
        if self.too_many_steps:
            lines.append(
                f"  Left out: batch sizes {list(self.too_many_steps)}, which make more than "
                f"{accounting.MAX_STEPS:.0e} steps."
            )
        if user.steps < self.min_steps:
            lines.append(
                f"No candidate keeps {self.min_steps} steps; this is the one with the most."
            )
        lines += [
            "",
            "Feed fit() with pydp_r.data.poisson_batches(data, sampling_rate="
            f"{user.sampling_rate:.4g}, user_ids=ids, max_examples_per_user={k}) for the "
            "user-level figures (privacy_unit='example' and sampling_rate="
            f"{example.sampling_rate:.4g} for the other route). Both assume every wearer holds "
            f"at least {k} examples.",
        ]
        return "\n".join(lines)


_ROUTE_FIELD = {
    SOLVE_NOISE: "noise_to_signal",
    SOLVE_USERS: "n_users",
    SOLVE_EPSILON: "user_epsilon",
}


def _default_batch_sizes(n: int) -> list[int]:
    """Powers of two from 16 up to n / 2 (or n itself when n < 32)."""
    sizes = []
    size = _SMALLEST_DEFAULT_BATCH
    while size <= n // 2:
        sizes.append(size)
        size *= 2
    return sizes or [min(n, _SMALLEST_DEFAULT_BATCH)]


def _check_batch_sizes(batch_sizes: Any, n: int) -> list[int]:
    if isinstance(batch_sizes, (int, float)):
        batch_sizes = [batch_sizes]
    try:
        sizes = list(batch_sizes)
    except TypeError:
        raise ValueError(
            f"batch_sizes must be a sequence of integers in [1, n] = [1, {n}]; received "
            f"{batch_sizes!r}."
        ) from None
    if not sizes:
        raise ValueError("batch_sizes must hold at least one batch size; received an empty one.")
    checked = []
    for size in sizes:
        size = check_count("batch_sizes", size)
        if size > n:
            raise ValueError(
                f"batch_sizes must be integers in [1, n] = [1, {n}]; received {size!r}."
            )
        checked.append(size)
    return sorted(set(checked))


def plan_dp_training(
    n: int | None,
    target_epsilon: float | None,
    epochs: float,
    delta: float,
    batch_sizes: Sequence[int] | None = None,
    min_steps: int = DEFAULT_MIN_STEPS,
    accountant: str = "rdp",
    unit: str = EXAMPLE,
    max_examples_per_user: int | None = None,
    noise_to_signal: float | None = None,
) -> DPTrainingPlan | UserLevelPlan:
    """Suggest a batch size, noise multiplier and step count for a target epsilon.

    For every candidate batch size the noise multiplier is calibrated to `target_epsilon`
    (`compute_noise_multiplier`, Poisson sampling at rate `batch_size / n`). The plan is the
    candidate with the smallest noise-to-signal ratio, `noise_multiplier / batch_size`,
    among those with at least `min_steps` steps; if none has that many, the one with the
    most steps.

    With `unit="user"`, `n` counts wearers (users) who each bring `max_examples_per_user`
    examples, and the guarantee is per wearer (see the module docstring). Give two of `n`,
    `target_epsilon` and `noise_to_signal`; the plan answers the third, for user-level
    DP-SGD and for the example-level route with group privacy, and says which is better:

    - `n` and `target_epsilon`: batch sizes in wearers, as above; both routes' noise-to-signal.
    - `n` and `noise_to_signal`: each candidate's noise multiplier is `noise_to_signal *
      batch_size`; the plan is the candidate with the smallest epsilon among those with at
      least `min_steps` steps.
    - `target_epsilon` and `noise_to_signal`: the run takes `min_steps` steps at rate
      `epochs / min_steps` (the least noisy run that keeps `min_steps` steps), the noise is
      calibrated to `target_epsilon`, and the wearers needed are
      `ceil(noise_multiplier / (rate * noise_to_signal))`.

    Args:
        n: Number of training examples (wearers with `unit="user"`), integer >= 1; None only
            with `unit="user"` to ask how many wearers are needed.
        target_epsilon: Epsilon budget at `delta`, > 0; None only with `unit="user"` to ask
            for the epsilon.
        epochs: Passes over the data, > 0, may be fractional.
        delta: Target delta, in (0, 1); usually below 1 / n.
        batch_sizes: Candidate expected batch sizes (wearers with `unit="user"`), integers in
            [1, n]. Default: powers of two from 16 up to n / 2.
        min_steps: Fewest steps a plan should keep, integer >= 1 (default 150).
        accountant: "rdp" or "pld" (see `pydp_r.compute_epsilon`).
        unit: "example" (default) or "user", the privacy unit.
        max_examples_per_user: With `unit="user"`: k, the examples each wearer brings to a
            step (and keeps in the example-level route), integer >= 1. Required there.
        noise_to_signal: With `unit="user"`: the noise-to-signal to reach, a number > 0;
            None (default) to plan for the least noisy steps.

    Returns:
        A `DPTrainingPlan` for `unit="example"`, a `UserLevelPlan` for `unit="user"`;
        `str()` of either is a readable table.

    Raises:
        ValueError: For an argument outside its range, for not exactly two of `n`,
            `target_epsilon` and `noise_to_signal` with `unit="user"`, or when no candidate
            batch size can reach `target_epsilon` (from `compute_noise_multiplier`) or all
            make more than `pydp_r.accounting.MAX_STEPS` steps.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}; received {unit!r}.")
    epochs = checks.check_epochs(epochs)
    delta = checks.check_delta(delta)
    min_steps = check_count("min_steps", min_steps)
    accountant = checks.check_accountant(accountant)
    if unit == EXAMPLE:
        if n is None or target_epsilon is None:
            raise ValueError(
                "n and target_epsilon are required with unit='example'; received "
                f"n={n!r}, target_epsilon={target_epsilon!r}."
            )
        if max_examples_per_user is not None or noise_to_signal is not None:
            raise ValueError(
                "max_examples_per_user and noise_to_signal are for unit='user'; received "
                f"max_examples_per_user={max_examples_per_user!r}, "
                f"noise_to_signal={noise_to_signal!r} with unit='example'."
            )
        n = check_count("n", n)
        target_epsilon = checks.check_target_epsilon(target_epsilon)
        sizes = (
            _default_batch_sizes(n) if batch_sizes is None else _check_batch_sizes(batch_sizes, n)
        )
        return _plan_examples(n, target_epsilon, epochs, delta, sizes, min_steps, accountant)
    return _plan_users(
        n,
        target_epsilon,
        noise_to_signal,
        epochs,
        delta,
        batch_sizes,
        min_steps,
        accountant,
        max_examples_per_user,
    )


def _plan_examples(
    n: int,
    target_epsilon: float,
    epochs: float,
    delta: float,
    sizes: list[int],
    min_steps: int,
    accountant: str,
) -> DPTrainingPlan:
    """`plan_dp_training` for checked arguments, per example (or per wearer when n counts
    wearers and each is clipped as one unit)."""

    candidates = []
    too_many_steps = []
    unreachable = None
    for batch_size in sizes:
        try:
            steps = accounting.num_steps(n, batch_size, epochs)
        except accounting.TooManyStepsError:  # larger batches take fewer steps: try them
            too_many_steps.append(batch_size)
            continue
        try:
            noise_multiplier = accounting.compute_noise_multiplier(
                n, batch_size, target_epsilon, epochs, delta, accountant=accountant
            )
        except ValueError as error:  # unreachable at this batch size: larger ones neither
            unreachable = str(error)
            break
        candidates.append(
            PlanCandidate(
                batch_size=batch_size,
                noise_multiplier=noise_multiplier,
                steps=steps,
                epsilon=accounting.compute_epsilon(
                    n, batch_size, noise_multiplier, epochs, delta, accountant=accountant
                ),
                noise_to_signal=noise_multiplier / batch_size,
            )
        )
    if not candidates and unreachable is not None:
        raise ValueError(
            f"No batch size in {sizes} reaches target_epsilon={target_epsilon!r}: {unreachable}"
        )
    if not candidates:
        fewest_steps_batch = math.ceil(epochs * n / accounting.MAX_STEPS)
        raise ValueError(
            f"Every batch size in {sizes} makes more than {accounting.MAX_STEPS:.0e} steps "
            f"(epochs * n / batch_size) with n={n!r} and epochs={epochs!r}, more than the "
            f"accountants handle: give batch_sizes >= {fewest_steps_batch} (at most n), or "
            "fewer epochs."
        )
    enough_steps = [c for c in candidates if c.steps >= min_steps]
    if enough_steps:
        chosen = min(enough_steps, key=lambda c: (c.noise_to_signal, -c.steps))
    else:
        chosen = max(candidates, key=lambda c: (c.steps, -c.noise_to_signal))
    return DPTrainingPlan(
        n=n,
        target_epsilon=target_epsilon,
        epochs=epochs,
        delta=delta,
        accountant=accountant,
        min_steps=min_steps,
        batch_size=chosen.batch_size,
        noise_multiplier=chosen.noise_multiplier,
        steps=chosen.steps,
        epsilon=chosen.epsilon,
        noise_to_signal=chosen.noise_to_signal,
        sampling_rate=chosen.batch_size / n,
        candidates=tuple(candidates),
        too_many_steps=tuple(too_many_steps),
    )


def _check_noise_to_signal(noise_to_signal: Any) -> float:
    return checks.check_real(
        "noise_to_signal",
        noise_to_signal,
        "a number > 0 (noise std over batch size times l2_norm_clip)",
        lambda x: 0 < x < math.inf,
    )


def _plan_users(
    n_users: Any,
    target_epsilon: Any,
    noise_to_signal: Any,
    epochs: float,
    delta: float,
    batch_sizes: Any,
    min_steps: int,
    accountant: str,
    max_examples_per_user: Any,
) -> UserLevelPlan:
    """`plan_dp_training(unit="user")` (see there); epochs, delta, min_steps and accountant
    are checked."""
    given = {
        "n": n_users is not None,
        "target_epsilon": target_epsilon is not None,
        "noise_to_signal": noise_to_signal is not None,
    }
    if sum(given.values()) != 2:
        raise ValueError(
            "unit='user' answers one question: give exactly two of n (wearers), "
            "target_epsilon and noise_to_signal; received "
            + ", ".join(
                f"{name}={value!r}"
                for name, value in zip(
                    given, (n_users, target_epsilon, noise_to_signal), strict=True
                )
            )
            + "."
        )
    if max_examples_per_user is None:
        raise ValueError(
            "max_examples_per_user is required with unit='user': the examples each wearer "
            "brings to a step, an integer >= 1."
        )
    k = check_count("max_examples_per_user", max_examples_per_user)
    if n_users is not None:
        n_users = check_count("n", n_users)
    if target_epsilon is not None:
        target_epsilon = checks.check_target_epsilon(target_epsilon)
    if noise_to_signal is not None:
        noise_to_signal = _check_noise_to_signal(noise_to_signal)
    if n_users is None and batch_sizes is not None:
        raise ValueError(
            "batch_sizes needs n: without n the plan takes min_steps steps at rate "
            f"epochs / min_steps; received batch_sizes={batch_sizes!r}."
        )
    common = {
        "max_examples_per_user": k,
        "target_epsilon": target_epsilon,
        "target_noise_to_signal": noise_to_signal,
        "epochs": epochs,
        "delta": delta,
        "accountant": accountant,
        "min_steps": min_steps,
    }
    if n_users is None:
        return _users_needed(target_epsilon, noise_to_signal, common)
    sizes = (
        _default_batch_sizes(n_users)
        if batch_sizes is None
        else _check_batch_sizes(batch_sizes, n_users)
    )
    if noise_to_signal is None:
        plan = _plan_examples(n_users, target_epsilon, epochs, delta, sizes, min_steps, accountant)
        rate, steps = plan.sampling_rate, plan.steps
        user_level = _route(USER, n_users, rate, steps, plan.noise_multiplier, delta, 1, accountant)
        example_noise = accounting.group_noise_multiplier(
            rate, steps, target_epsilon, delta, k, accountant
        )
        example_level = _route(EXAMPLE, n_users, rate, steps, example_noise, delta, k, accountant)
        return UserLevelPlan(
            solved_for=SOLVE_NOISE,
            user_level=user_level,
            example_level=example_level,
            candidates=plan.candidates,
            too_many_steps=plan.too_many_steps,
            **common,
        )
    candidates, too_many_steps = [], []
    for batch_size in sizes:
        try:
            steps = accounting.num_steps(n_users, batch_size, epochs)
        except accounting.TooManyStepsError:
            too_many_steps.append(batch_size)
            continue
        noise_multiplier = min(noise_to_signal * batch_size, checks.MAX_NOISE_MULTIPLIER)
        candidates.append(
            PlanCandidate(
                batch_size=batch_size,
                noise_multiplier=noise_multiplier,
                steps=steps,
                epsilon=accounting.compute_epsilon(
                    n_users, batch_size, noise_multiplier, epochs, delta, accountant=accountant
                ),
                noise_to_signal=noise_multiplier / batch_size,
            )
        )
    if not candidates:
        raise ValueError(
            f"Every batch size in {sizes} makes more than {accounting.MAX_STEPS:.0e} steps "
            f"with n={n_users!r} and epochs={epochs!r}: give larger batch_sizes or fewer epochs."
        )
    enough_steps = [c for c in candidates if c.steps >= min_steps]
    if enough_steps:
        chosen = min(enough_steps, key=lambda c: (c.epsilon, -c.steps))
    else:
        chosen = max(candidates, key=lambda c: (c.steps, c.epsilon))
    rate = chosen.batch_size / n_users
    user_level = _route(
        USER, n_users, rate, chosen.steps, chosen.noise_multiplier, delta, 1, accountant
    )
    # The same noise-to-signal over k examples per wearer: k times the noise multiplier.
    example_noise = min(chosen.noise_multiplier * k, checks.MAX_NOISE_MULTIPLIER)
    example_level = _route(
        EXAMPLE, n_users, rate, chosen.steps, example_noise, delta, k, accountant
    )
    return UserLevelPlan(
        solved_for=SOLVE_EPSILON,
        user_level=user_level,
        example_level=example_level,
        candidates=tuple(candidates),
        too_many_steps=tuple(too_many_steps),
        **common,
    )


def _users_needed(
    target_epsilon: float, noise_to_signal: float, common: dict[str, Any]
) -> UserLevelPlan:
    """The wearers each route needs for `target_epsilon` at `noise_to_signal`, at the rate
    that keeps `min_steps` steps."""
    epochs, min_steps, k = common["epochs"], common["min_steps"], common["max_examples_per_user"]
    delta, accountant = common["delta"], common["accountant"]
    rate = min(1.0, epochs / min_steps)
    steps = min_steps if rate < 1 else math.ceil(epochs)
    routes = []
    for name, group_size in ((USER, 1), (EXAMPLE, k)):
        noise_multiplier = accounting.group_noise_multiplier(
            rate, steps, target_epsilon, delta, group_size, accountant
        )
        # noise / (rate * examples per wearer * wearers) <= noise_to_signal.
        n_users = max(1, math.ceil(noise_multiplier / (rate * group_size * noise_to_signal)))
        routes.append(
            _route(name, n_users, rate, steps, noise_multiplier, delta, group_size, accountant)
        )
    return UserLevelPlan(
        solved_for=SOLVE_USERS, user_level=routes[0], example_level=routes[1], **common
    )


def _route(
    name: str,
    n_users: int,
    sampling_rate: float,
    steps: int,
    noise_multiplier: float,
    delta: float,
    group_size: int,
    accountant: str,
) -> PrivacyRoute:
    """A route's figures; its per-wearer epsilon from dp-accounting (by group privacy over
    `group_size` examples for the example-level route)."""
    expected_batch_size = sampling_rate * n_users * group_size
    return PrivacyRoute(
        name=name,
        n_users=n_users,
        sampling_rate=sampling_rate,
        expected_batch_size=expected_batch_size,
        noise_multiplier=noise_multiplier,
        steps=steps,
        user_epsilon=accounting.user_epsilon(
            noise_multiplier, sampling_rate, steps, delta, group_size, accountant
        ),
        noise_to_signal=noise_multiplier / expected_batch_size,
    )


__all__ = [
    "DEFAULT_MIN_STEPS",
    "DPTrainingPlan",
    "PlanCandidate",
    "PrivacyRoute",
    "UserLevelPlan",
    "plan_dp_training",
]
