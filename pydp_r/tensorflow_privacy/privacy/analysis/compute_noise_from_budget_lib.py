"""TF Privacy's `privacy.analysis.compute_noise_from_budget_lib` on `dp_accounting`.

`compute_noise` calibrates the noise multiplier exactly as TF Privacy 0.9.0 does (its RDP
orders, step count, search bracket and tolerance), so it returns the same number; the search
is `pydp_r.accounting.calibrate_noise_multiplier` (dp-accounting's `calibrate_dp_mechanism`),
as for `pydp_r.compute_noise_multiplier` (default RDP orders, PLD option, microbatching
correction).
"""

from __future__ import annotations

import math

import dp_accounting

from pydp_r import accounting
from pydp_r._checks import (
    check_delta,
    check_epochs,
    check_n_and_batch_size,
    check_positive,
    check_target_epsilon,
)

__all__ = ["compute_noise"]


def compute_noise(
    n: int, batch_size: int, target_epsilon: float, epochs: float, delta: float, noise_lbd: float
) -> float:
    """Smallest noise multiplier of Poisson-sampled DP-SGD meeting `target_epsilon` at `delta`.

    Args:
        n: Number of training examples, integer >= 1.
        batch_size: Examples per step, integer in [1, n]; sampling rate `batch_size / n`.
        target_epsilon: Epsilon budget, > 0.
        epochs: Passes over the data, > 0; `ceil(epochs * n / batch_size)` steps.
        delta: Target delta, in (0, 1).
        noise_lbd: Lower end (> 0) of the search; its epsilon must exceed the target.

    Returns:
        The noise multiplier (RDP accountant over TF Privacy's classic orders), or 0 when
        `noise_lbd` already meets the target (TF Privacy's answer; it prints why).

    Raises:
        ValueError: For an argument outside its range.
    """
    n, batch_size = check_n_and_batch_size(n, batch_size)
    target_epsilon = check_target_epsilon(target_epsilon)
    epochs = check_epochs(epochs)
    delta = check_delta(delta)
    noise_lbd = check_positive("noise_lbd", noise_lbd)
    sampling_probability = batch_size / n
    num_steps = int(math.ceil(epochs * n / batch_size))

    def make_accountant() -> dp_accounting.PrivacyAccountant:
        return dp_accounting.rdp.RdpAccountant(accounting.CLASSIC_RDP_ORDERS)

    lower_end = make_accountant().compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                sampling_probability, dp_accounting.GaussianDpEvent(noise_lbd)
            ),
            num_steps,
        )
    )
    if lower_end.get_epsilon(delta) < target_epsilon:
        print("noise_lbd too large for target epsilon.")
        return 0
    noise_multiplier = accounting.calibrate_noise_multiplier(
        make_accountant,
        sampling_probability,
        num_steps,
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(noise_lbd, noise_lbd * 2),
    )
    print(
        f"DP-SGD with sampling rate = {100 * sampling_probability:.3g}% and noise_multiplier = "
        f"{noise_multiplier} iterated over {num_steps} steps satisfies differential privacy "
        f"with eps = {target_epsilon:.3g} and delta = {delta}."
    )
    return noise_multiplier
