"""TF Privacy's `privacy.analysis.compute_noise_from_budget_lib` on `dp_accounting`.

`compute_noise` calibrates the noise multiplier exactly as TF Privacy 0.9.0 does (its RDP
orders, step count and `dp_accounting.calibrate_dp_mechanism` search), so it returns the same
number. `pydp_r.compute_noise_multiplier` is pydp_r's own calibration (default RDP orders, PLD
option, microbatching correction).
"""

from __future__ import annotations

import math

import dp_accounting

from pydp_r import accounting
from pydp_r._checks import check_count, check_real

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
    n = check_count("n", n)
    batch_size = check_count("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(
            f"batch_size must be an integer in [1, n] = [1, {n}]; received {batch_size!r}."
        )
    target_epsilon = check_real(
        "target_epsilon", target_epsilon, "a finite number > 0", lambda v: 0 < v < math.inf
    )
    epochs = check_real("epochs", epochs, "a finite number > 0", lambda v: 0 < v < math.inf)
    delta = check_real("delta", delta, "a number in (0, 1)", lambda v: 0 < v < 1)
    noise_lbd = check_real(
        "noise_lbd", noise_lbd, "a finite number > 0", lambda v: 0 < v < math.inf
    )
    sampling_probability = batch_size / n
    num_steps = int(math.ceil(epochs * n / batch_size))

    def training(noise_multiplier: float) -> dp_accounting.DpEvent:
        step = dp_accounting.PoissonSampledDpEvent(
            sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)
        )
        return dp_accounting.SelfComposedDpEvent(step, num_steps)

    def make_accountant() -> dp_accounting.PrivacyAccountant:
        return dp_accounting.rdp.RdpAccountant(accounting.CLASSIC_RDP_ORDERS)

    if make_accountant().compose(training(noise_lbd)).get_epsilon(delta) < target_epsilon:
        print("noise_lbd too large for target epsilon.")
        return 0
    noise_multiplier = dp_accounting.calibrate_dp_mechanism(
        make_accountant,
        training,
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
