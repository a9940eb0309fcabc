"""Privacy accounting against closed forms, published figures and its own monotonicity."""

import logging
import math

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from pydp_r import accounting
from pydp_r.accounting import (
    MAX_NOISE_MULTIPLIER,
    MAX_STEPS,
    TooManyStepsError,
    compute_dp_sgd_privacy,
    compute_epsilon,
    compute_noise_multiplier,
    group_privacy_epsilon,
    privacy_statement,
    user_epsilon,
)

FEW = settings(max_examples=8, deadline=None)


def gaussian_rdp_epsilon(noise_multiplier, steps, delta, orders):
    """Epsilon of `steps` Gaussian mechanisms from their RDP, steps * alpha / (2 sigma^2),
    converted with the bound of Canonne, Kamath and Steinke (2020, Prop. 12), minimized over
    `orders`. Returns (epsilon, order)."""
    orders = np.asarray(orders, dtype=float)
    rdp = steps * orders / (2 * noise_multiplier**2)
    epsilons = rdp + np.log1p(-1 / orders) - np.log(delta * orders) / (orders - 1)
    best = int(np.argmin(epsilons))
    return float(epsilons[best]), float(orders[best])


def gaussian_rdp_epsilon_continuous(noise_multiplier, steps, delta):
    """The same bound minimized over every real order in [1.01, 1024]."""

    def epsilon(order):
        return gaussian_rdp_epsilon(noise_multiplier, steps, delta, [order])[0]

    result = optimize.minimize_scalar(epsilon, bounds=(1.01, 1024), method="bounded")
    grid = np.geomspace(1.01, 1024, 4000)
    return min(result.fun, gaussian_rdp_epsilon(noise_multiplier, steps, delta, grid)[0])


def analytic_gaussian_delta(epsilon, sigma):
    """Exact delta(epsilon) of the Gaussian mechanism with sensitivity 1, noise std sigma
    (Balle and Wang 2018)."""
    return stats.norm.cdf(-epsilon * sigma + 1 / (2 * sigma)) - math.exp(epsilon) * stats.norm.cdf(
        -epsilon * sigma - 1 / (2 * sigma)
    )


def analytic_gaussian_epsilon(sigma, delta):
    return optimize.brentq(lambda e: analytic_gaussian_delta(e, sigma) - delta, 0, 500, xtol=1e-12)


# --- closed forms: batch_size == n, so every step is a plain Gaussian mechanism -----------


@FEW
@given(
    noise_multiplier=st.floats(0.5, 20),
    epochs=st.integers(1, 200),
    delta=st.sampled_from([1e-3, 1e-5, 1e-8]),
)
def test_full_batch_rdp_is_composed_gaussian_rdp(noise_multiplier, epochs, delta):
    n = 40
    ours = compute_epsilon(n, n, noise_multiplier, epochs, delta)
    best = gaussian_rdp_epsilon_continuous(noise_multiplier, epochs, delta)
    on_grid, order = gaussian_rdp_epsilon(
        noise_multiplier, epochs, delta, dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS
    )
    # dp-accounting minimizes the same bound over its grid of orders: never below the
    # continuous optimum, equal to the closed form over that grid, and within 1% of the
    # optimum where the grid is fine (orders up to 63; beyond, it jumps to 128, 256, ...).
    assert best - 1e-9 <= ours
    assert ours == pytest.approx(on_grid, rel=1e-9, abs=1e-12)
    if order < 63:
        assert ours <= best * 1.01 + 1e-9


@pytest.mark.parametrize("noise_multiplier", [0.7, 1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 9])
def test_full_batch_pld_matches_analytic_gaussian(noise_multiplier, steps):
    delta = 1e-5
    # T Gaussian mechanisms of std sigma compose to one of std sigma / sqrt(T).
    exact = analytic_gaussian_epsilon(noise_multiplier / math.sqrt(steps), delta)
    pld = compute_epsilon(10, 10, noise_multiplier, steps, delta, accountant="pld")
    rdp = compute_epsilon(10, 10, noise_multiplier, steps, delta, accountant="rdp")
    # PLD is a (pessimistic) discretization of the exact curve; RDP is looser still.
    assert exact * (1 - 1e-6) <= pld <= exact * 1.01 + 1e-3
    assert pld <= rdp
    assert analytic_gaussian_delta(pld, noise_multiplier / math.sqrt(steps)) <= delta * 1.001


def test_fractional_epochs_round_steps_up():
    # q = 1: 2.5 epochs are ceil(2.5) = 3 steps.
    expected = gaussian_rdp_epsilon_continuous(2.0, 3, 1e-5)
    assert compute_epsilon(8, 8, 2.0, 2.5, 1e-5) == pytest.approx(expected, rel=0.01)
    assert compute_epsilon(8, 8, 2.0, 2.5, 1e-5) > compute_epsilon(8, 8, 2.0, 2, 1e-5)


# --- sampled case: ordering and monotonicity ---------------------------------------------


@pytest.mark.parametrize(
    "n, batch_size, noise_multiplier, epochs",
    [(60000, 256, 1.1, 60), (3989, 32, 1.1, 20), (1000, 100, 0.8, 3)],
)
def test_pld_is_tighter_than_rdp_and_sampling_amplifies(n, batch_size, noise_multiplier, epochs):
    rdp = compute_epsilon(n, batch_size, noise_multiplier, epochs, 1e-5)
    pld = compute_epsilon(n, batch_size, noise_multiplier, epochs, 1e-5, accountant="pld")
    assert 0 < pld < rdp
    # Poisson sampling at q < 1 over ceil(epochs / q) steps beats epochs full-batch steps.
    full_batch = compute_epsilon(n, n, noise_multiplier, epochs, 1e-5)
    assert rdp < full_batch


@FEW
@given(
    noise_multiplier=st.floats(0.6, 5),
    factor=st.floats(1.05, 3),
    epochs=st.integers(1, 30),
    batch_size=st.integers(1, 500),
)
def test_more_noise_less_epsilon_more_epochs_more_epsilon(
    noise_multiplier, factor, epochs, batch_size
):
    n = 1000
    base = compute_epsilon(n, batch_size, noise_multiplier, epochs, 1e-5)
    assert compute_epsilon(n, batch_size, noise_multiplier * factor, epochs, 1e-5) < base
    assert compute_epsilon(n, batch_size, noise_multiplier, epochs + 1, 1e-5) > base
    assert compute_epsilon(n, batch_size, noise_multiplier, epochs, 1e-3) < base


def test_microbatching_doubles_sensitivity():
    args = (5000, 50, 2.0, 10, 1e-5)
    with_microbatches = compute_epsilon(*args, used_microbatching=True)
    assert with_microbatches > compute_epsilon(*args)
    # Sensitivity 2C with noise sigma * C is the mechanism of sensitivity C with noise sigma/2.
    assert with_microbatches == pytest.approx(compute_epsilon(5000, 50, 1.0, 10, 1e-5), rel=1e-12)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_zero_noise_is_infinite_epsilon(accountant):
    assert compute_epsilon(100, 10, 0.0, 1, 1e-5, accountant=accountant) == math.inf
    assert compute_dp_sgd_privacy(100, 10, 0.0, 1, 1e-5)[0] == math.inf


# --- calibration --------------------------------------------------------------------------


@FEW
@given(
    target_epsilon=st.floats(0.3, 12),
    batch_size=st.integers(5, 400),
    epochs=st.integers(1, 40),
)
@pytest.mark.slow  # over 3 s: the full tier
def test_noise_multiplier_is_the_smallest_meeting_the_target(target_epsilon, batch_size, epochs):
    n = 2000
    sigma = compute_noise_multiplier(n, batch_size, target_epsilon, epochs, 1e-5)
    assert compute_epsilon(n, batch_size, sigma, epochs, 1e-5) <= target_epsilon
    assert compute_epsilon(n, batch_size, sigma * (1 - 1e-3), epochs, 1e-5) > target_epsilon


@pytest.mark.slow  # over 3 s: the full tier
def test_noise_multiplier_with_pld_and_microbatching():
    sigma = compute_noise_multiplier(500, 50, 2.0, 2, 1e-5, accountant="pld")
    assert compute_epsilon(500, 50, sigma, 2, 1e-5, accountant="pld") <= 2.0
    assert compute_epsilon(500, 50, sigma * 0.999, 2, 1e-5, accountant="pld") > 2.0
    doubled = compute_noise_multiplier(500, 50, 2.0, 2, 1e-5, used_microbatching=True)
    plain = compute_noise_multiplier(500, 50, 2.0, 2, 1e-5)
    assert doubled == pytest.approx(2 * plain, rel=2e-4)


def test_unreachable_target_is_an_error_not_a_loop():
    # Full batch, 100 steps: the RDP conversion cannot go below ~0.003 at delta 1e-5.
    with pytest.raises(ValueError, match="target_epsilon=0.001 is unreachable"):
        compute_noise_multiplier(10, 10, 1e-3, 100, 1e-5)


def test_unreachable_target_names_the_floor_and_what_to_change():
    # Issue #26: the user gave no noise_multiplier, yet was told to use a smaller one.
    floor = compute_epsilon(1000, 32, MAX_NOISE_MULTIPLIER, 1, 1e-5)
    with pytest.raises(ValueError) as error:
        compute_noise_multiplier(1000, 32, 1e-6, 1, 1e-5)
    message = str(error.value)
    assert "noise_multiplier <= 10000" in message and f"below {floor:.3g}" in message
    for remedy in ("larger n", "fewer epochs", "smaller batch_size", "larger delta"):
        assert remedy in message
    assert "smaller noise_multiplier" not in message


@pytest.mark.parametrize("accountant, epochs", [("rdp", 1), ("pld", 0.001)])
def test_the_whole_documented_noise_range_is_accounted(accountant, epochs):
    # Issue #26: noise_multiplier=1e4, the documented maximum, raised "a rounding artefact".
    # Batch 1 of 1000 is so noisy that dp-accounting proves (0, 1e-5)-DP (the RDP accountant
    # from the KL divergence, the PLD one from the privacy loss): 0 is its answer, not a bug.
    noises = [0.5, 2.0, 10.0, 100.0, 1e3, MAX_NOISE_MULTIPLIER]
    epsilons = [compute_epsilon(1000, 1, s, epochs, 1e-5, accountant=accountant) for s in noises]
    assert epsilons[-1] == 0.0
    assert all(a >= b >= 0 for a, b in zip(epsilons, epsilons[1:], strict=False))
    with pytest.raises(ValueError, match=r"noise_multiplier must be a number in \[0, 10000\]"):
        compute_epsilon(1000, 1, MAX_NOISE_MULTIPLIER * (1 + 1e-9), 1, 1e-5)


def test_a_target_met_only_by_a_proven_zero_epsilon_is_reached():
    # Before, the search ran into the accountant's 0 and told the user to lower the noise.
    noise = compute_noise_multiplier(1000, 1, 1e-6, 1, 1e-5)
    assert 0 < noise < MAX_NOISE_MULTIPLIER
    assert compute_epsilon(1000, 1, noise, 1, 1e-5) <= 1e-6
    assert compute_epsilon(1000, 1, noise * (1 - 1e-3), 1, 1e-5) > 1e-6


def test_too_many_steps_names_the_steps_and_the_fix_not_epochs():
    # Issue #26: n=1e30 was blamed on epochs ("epochs must give at most 1e+07 steps").
    with pytest.raises(TooManyStepsError) as error:
        compute_epsilon(10**30, 100, 1.1, 1, 1e-5)
    message = str(error.value)
    assert "1e+28 noisy steps" in message and "MAX_STEPS" in message
    assert f"Use batch_size >= {10**30 // MAX_STEPS} (at most n), or fewer epochs" in message
    assert not message.startswith("epochs")
    assert isinstance(error.value, ValueError)
    assert accounting.num_steps(10**9, 100, 1) == MAX_STEPS  # the largest accounted
    with pytest.raises(TooManyStepsError, match="Use batch_size >= 100 "):
        accounting.num_steps(10**9, 99, 1)


def test_one_noise_calibration_serves_both_namespaces(monkeypatch):
    # pydp_r's compute_noise_multiplier and TF Privacy's compute_noise run the same search.
    from pydp_r.tensorflow_privacy.privacy.analysis import compute_noise_from_budget_lib

    calls = []
    calibrate = accounting.calibrate_noise_multiplier

    def spy(*args, **kwargs):
        calls.append(args[2])  # the number of steps
        return calibrate(*args, **kwargs)

    monkeypatch.setattr(accounting, "calibrate_noise_multiplier", spy)
    compute_noise_multiplier(60000, 150, 2.0, 15, 1e-5)
    compute_noise_from_budget_lib.compute_noise(60000, 150, 2.0, 15, 1e-5, 0.5)
    assert calls == [6000, 6000]


# --- TF Privacy's classic function ---------------------------------------------------------

CLASSIC_ORDERS = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64))
CLASSIC_ORDERS += [128, 256, 512]


@pytest.mark.parametrize("noise_multiplier, epochs", [(1.1, 3), (4.0, 50), (0.9, 1)])
def test_classic_function_uses_the_classic_orders(noise_multiplier, epochs):
    # q = 1: the RDP is in closed form, so epsilon and the optimal order are known exactly.
    epsilon, order = compute_dp_sgd_privacy(100, 100, noise_multiplier, epochs, 1e-5)
    expected_epsilon, expected_order = gaussian_rdp_epsilon(
        noise_multiplier, epochs, 1e-5, CLASSIC_ORDERS
    )
    assert epsilon == pytest.approx(expected_epsilon, rel=1e-9)
    assert order == expected_order


def test_classic_function_reproduces_the_published_mnist_figure():
    # TF Privacy's MNIST tutorial (n=60000, batch 256, noise 1.1, 60 epochs, delta 1e-5)
    # published epsilon 3.01, computed with the older conversion eps = rdp - log(delta)/(a-1).
    # Undo today's conversion at the returned order to recover that older bound.
    epsilon, order = compute_dp_sgd_privacy(60000, 256, 1.1, 60, 1e-5)
    older_bound = epsilon - math.log1p(-1 / order) + math.log(order) / (order - 1)
    assert order in CLASSIC_ORDERS
    assert epsilon < 3.01
    assert 3.005 <= older_bound <= 3.05


def test_classic_function_counts_steps_like_tf_privacy():
    # ceil(epochs * n / batch_size) steps of rate batch_size / n, checked against
    # dp-accounting's accountant composed by hand for a few fractional epoch counts.
    for epochs in (0.5, 1.7, 3.0):
        steps = math.ceil(epochs * 1000 / 64)
        accountant = dp_accounting.rdp.RdpAccountant(CLASSIC_ORDERS)
        accountant.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(0.064, dp_accounting.GaussianDpEvent(1.3)),
                steps,
            )
        )
        expected = accountant.get_epsilon_and_optimal_order(1e-6)
        assert compute_dp_sgd_privacy(1000, 64, 1.3, epochs, 1e-6) == pytest.approx(expected)


# --- privacy statement ----------------------------------------------------------------------


def test_statement_reports_both_accountants_and_its_assumptions():
    text = privacy_statement(60000, 256, 1.1, 60, 1e-5)
    for accountant in ("rdp", "pld"):
        assert f"{compute_epsilon(60000, 256, 1.1, 60, 1e-5, accountant=accountant):.3f}" in text
    # Each example once per epoch: 60 full-batch Gaussian steps (no sampling amplification).
    assert f"{compute_epsilon(60000, 60000, 1.1, 60, 1e-5):.3f}" in text
    for phrase in (
        "add-or-remove-one-example",
        "Poisson sampling",
        "NOT Poisson",
        "poisson_batches",
        "checkpoint",
        "14063 steps",
        "No user-level guarantee",
    ):
        assert phrase in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_statement_with_microbatching_accounts_doubled_sensitivity():
    text = privacy_statement(5000, 50, 2.0, 5, 1e-5, used_microbatching=True)
    assert f"{compute_epsilon(5000, 50, 2.0, 5, 1e-5, used_microbatching=True):.3f}" in text
    assert f"{compute_epsilon(5000, 50, 2.0, 5, 1e-5):.3f}" not in text


def test_group_privacy_has_one_implementation_shared_with_tf_privacy():
    # TF Privacy's namespace had its own search (other brackets and tolerances); now its
    # user-level epsilon is group_privacy_epsilon's over its example-level curve.
    from pydp_r.tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib as lib

    for k in (2, 4):
        ours = user_epsilon(1.1, 0.01, 500, 1e-5, k)
        theirs = lib._compute_dp_sgd_user_privacy(5, 1.1, 1e-5, k, False, 0.01)
        assert ours == theirs
    assert not hasattr(lib, "_log_expm1")
    assert lib.UserLevelDPComputationError is accounting.GroupPrivacySearchError


def test_group_privacy_epsilon_inverts_the_lemma_on_a_known_curve():
    # A curve with a closed form: eps(d) = log(1 / d) / 10. At the returned group epsilon
    # k * eps, the group delta d (e^{k eps} - 1) / (e^{eps} - 1) is the target, from below.
    def curve(example_delta):
        return math.log(1 / example_delta) / 10

    for k in (2, 3, 7):
        epsilon = group_privacy_epsilon(curve, 1e-6, k)
        example_epsilon = epsilon / k
        example_delta = math.exp(-10 * example_epsilon)
        group_delta = example_delta * math.expm1(epsilon) / math.expm1(example_epsilon)
        assert group_delta <= 1e-6
        assert group_delta == pytest.approx(1e-6, rel=1e-8)
    assert group_privacy_epsilon(curve, 1e-6, 1) == curve(1e-6)


def test_group_privacy_without_a_finite_bound_is_infinite_without_a_warning(recwarn):
    # An example epsilon that grows faster than the group factor can follow.
    epsilon = group_privacy_epsilon(lambda d: math.log(1 / d), 1e-5, 10)
    assert epsilon == math.inf
    assert len(recwarn) == 0


def test_user_level_epsilon_satisfies_group_privacy():
    noise, rate, steps, delta = 1.5, 0.01, 500, 1e-5
    single = user_epsilon(noise, rate, steps, delta, 1)
    assert single == pytest.approx(compute_epsilon(10000, 100, noise, 5, delta), rel=1e-12)
    for group in (2, 5):
        group_epsilon = user_epsilon(noise, rate, steps, delta, group)
        assert group_epsilon > group * single
        # Recompute the example-level delta at eps = user_eps / k with dp-accounting's own
        # delta-from-epsilon conversion; Vadhan's Lemma 2.2 must then give delta back.
        example_epsilon = group_epsilon / group
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)),
                steps,
            )
        )
        example_delta = accountant.get_delta(example_epsilon)
        group_delta = example_delta * math.expm1(group_epsilon) / math.expm1(example_epsilon)
        assert group_delta == pytest.approx(delta, rel=0.02)
    text = privacy_statement(10000, 100, noise, 5, delta, max_examples_per_user=5)
    assert f"{user_epsilon(noise, rate, steps, delta, 5):.3f}" in text
    words = " ".join(text.split())  # the statement is wrapped to its width
    assert "Vadhan" in words and "at most 5 examples per user" in words


# --- bad input ------------------------------------------------------------------------------

GOOD = {"n": 1000, "batch_size": 10, "noise_multiplier": 1.0, "epochs": 2, "delta": 1e-5}
BAD = [
    ("n", 0, "n must be a positive integer"),
    ("n", -5, "n must be a positive integer"),
    ("n", 10.5, "n must be a positive integer"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("batch_size", 1001, r"batch_size must be an integer in \[1, n\] = \[1, 1000\]"),
    ("noise_multiplier", -0.1, "noise_multiplier must be a number in \\[0, 10000\\]"),
    ("noise_multiplier", math.nan, "noise_multiplier must be a number in \\[0, 10000\\]"),
    ("epochs", 0, "epochs must be a finite number > 0"),
    ("epochs", -1, "epochs must be a finite number > 0"),
    ("delta", 0, r"delta must be a number in the open interval \(0, 1\)"),
    ("delta", 1, r"delta must be a number in the open interval \(0, 1\)"),
    ("delta", 1.5, r"delta must be a number in the open interval \(0, 1\)"),
]


@pytest.mark.parametrize("name, value, message", BAD)
@pytest.mark.parametrize("function", [compute_epsilon, compute_dp_sgd_privacy, privacy_statement])
def test_bad_input_names_argument_and_range(function, name, value, message):
    with pytest.raises(ValueError, match=message) as error:
        function(**{**GOOD, name: value})
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("name, value, message", [b for b in BAD if b[0] != "noise_multiplier"])
def test_bad_input_to_calibration(name, value, message):
    arguments = {**GOOD, "target_epsilon": 1.0}
    del arguments["noise_multiplier"]
    with pytest.raises(ValueError, match=message):
        compute_noise_multiplier(**{**arguments, name: value})


@pytest.mark.parametrize("target_epsilon", [0, -1.0, math.inf])
def test_bad_target_epsilon(target_epsilon):
    with pytest.raises(ValueError, match="target_epsilon must be a finite number > 0"):
        compute_noise_multiplier(1000, 10, target_epsilon, 2, 1e-5)


def test_unknown_accountant():
    with pytest.raises(ValueError, match='accountant must be one of "rdp", "pld"'):
        compute_epsilon(1000, 10, 1.0, 2, 1e-5, accountant="moments")
    with pytest.raises(ValueError, match="accountant must be one of"):
        compute_noise_multiplier(1000, 10, 1.0, 2, 1e-5, accountant="gdp")
    assert compute_epsilon(1000, 10, 1.0, 2, 1e-5, accountant="PLD") == compute_epsilon(
        1000, 10, 1.0, 2, 1e-5, accountant="pld"
    )


def test_bad_max_examples_per_user():
    with pytest.raises(ValueError, match="max_examples_per_user must be a positive integer"):
        privacy_statement(1000, 10, 1.0, 2, 1e-5, max_examples_per_user=0)


def test_group_noise_multiplier_of_one_example_is_compute_noise_multiplier():
    from pydp_r.accounting import group_noise_multiplier

    # 1000 examples in batches of 100 for 15 epochs: rate 0.1, 150 steps.
    single = group_noise_multiplier(0.1, 150, 1.0, 1e-6, 1)
    assert single == pytest.approx(compute_noise_multiplier(1000, 100, 1.0, 15, 1e-6), rel=2e-4)


def test_group_noise_multiplier_is_the_smallest_meeting_the_group_epsilon():
    from pydp_r.accounting import GroupPrivacyAccountant, group_noise_multiplier, user_epsilon

    noise = group_noise_multiplier(0.1, 150, 1.0, 1e-6, 8)
    assert user_epsilon(noise, 0.1, 150, 1e-6, 8) <= 1.0
    assert user_epsilon(noise * (1 - 1e-3), 0.1, 150, 1e-6, 8) > 1.0
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(noise)), 150
    )
    group = GroupPrivacyAccountant(dp_accounting.rdp.RdpAccountant(), 8).compose(event)
    assert group.get_epsilon(1e-6) == user_epsilon(noise, 0.1, 150, 1e-6, 8)
    assert group.ledger == event


def test_user_level_statement_is_per_wearer_with_the_users_accountant_figures():
    text = privacy_statement(1000, 64, 1.2, 20, 1e-6, max_examples_per_user=32, unit="user")
    assert "n = 1000 users (wearers)" in text and "up to 32 examples each" in text
    assert "Per user (per wearer): user-level DP" in text and "no group privacy" in text
    assert "per example" not in text and "Example-level" not in text
    rdp = compute_epsilon(1000, 64, 1.2, 20, 1e-6)
    pld = compute_epsilon(1000, 64, 1.2, 20, 1e-6, accountant="pld")
    (row,) = [line for line in text.splitlines() if "Poisson sampling of users" in line]
    assert "313 steps [U3]" in row
    assert row.split()[-2:] == [f"{rdp:.3f}", f"{pld:.3f}"]
    with pytest.raises(ValueError, match="used_microbatching must be False with unit='user'"):
        privacy_statement(1000, 64, 1.2, 20, 1e-6, used_microbatching=True, unit="user")
    with pytest.raises(ValueError, match="unit must be one of"):
        privacy_statement(1000, 64, 1.2, 20, 1e-6, unit="wearer")


def test_group_privacy_statement_names_its_route_per_wearer():
    text = privacy_statement(32000, 2048, 8.0, 20, 1e-6, max_examples_per_user=32)
    assert "Per user (per wearer), add-or-remove-one-user adjacency" in text
    assert (
        "(the example-level route; user-level DP-SGD, unit='user', needs no such conversion)"
        in (" ".join(text.split()))
    )


def test_orders_that_do_not_converge_are_left_out_quietly(caplog):
    """dp-accounting logs one line per RDP order it leaves out (still an upper bound);
    a grid of settings used to print dozens of them."""
    with caplog.at_level(logging.WARNING):
        for noise_multiplier in (0.8, 1.0, 1.5):
            compute_epsilon(
                n=1000, batch_size=133, noise_multiplier=noise_multiplier, epochs=3, delta=1e-3
            )
    assert not [record for record in caplog.records if "converge" in record.getMessage()]
