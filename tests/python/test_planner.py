"""plan_dp_training: each candidate's noise is the accountant's, and the rule picks as stated."""

import math
import subprocess
import sys

import pytest

from pydp_r.accounting import compute_epsilon, compute_noise_multiplier
from pydp_r.planner import DPTrainingPlan, plan_dp_training

HEART_RATE = dict(n=3378, target_epsilon=2.0, epochs=20, delta=1e-5)


@pytest.fixture(scope="module")
def heart_rate_plan() -> DPTrainingPlan:
    return plan_dp_training(**HEART_RATE, batch_sizes=[64, 256, 512, 1024])


def test_every_candidate_is_calibrated_by_the_accountant(heart_rate_plan):
    for candidate in heart_rate_plan.candidates:
        expected_noise = compute_noise_multiplier(3378, candidate.batch_size, 2.0, 20, 1e-5)
        assert candidate.noise_multiplier == expected_noise
        assert candidate.epsilon == compute_epsilon(
            3378, candidate.batch_size, candidate.noise_multiplier, 20, 1e-5
        )
        assert candidate.epsilon <= 2.0
        assert candidate.steps == math.ceil(20 * 3378 / candidate.batch_size)
        assert candidate.noise_to_signal == candidate.noise_multiplier / candidate.batch_size


def test_larger_batches_with_calibrated_noise_are_less_noisy_per_step(heart_rate_plan):
    ratios = [candidate.noise_to_signal for candidate in heart_rate_plan.candidates]
    assert ratios == sorted(ratios, reverse=True) and len(set(ratios)) == len(ratios)


def test_chosen_is_the_least_noisy_with_enough_steps(heart_rate_plan):
    # Steps are 1056, 264, 132, 66: with min_steps 150 the batch of 256 is the largest left.
    assert heart_rate_plan.batch_size == 256
    assert heart_rate_plan.steps == 264
    assert heart_rate_plan.sampling_rate == 256 / 3378
    chosen = [c for c in heart_rate_plan.candidates if c.batch_size == 256][0]
    assert heart_rate_plan.noise_multiplier == chosen.noise_multiplier
    assert heart_rate_plan.noise_to_signal == chosen.noise_to_signal
    fewer = plan_dp_training(**HEART_RATE, batch_sizes=[64, 256, 512, 1024], min_steps=100)
    assert fewer.batch_size == 512


def test_without_enough_steps_the_plan_keeps_the_most_steps():
    plan = plan_dp_training(**HEART_RATE, batch_sizes=[512, 1024], min_steps=10_000)
    assert plan.batch_size == 512
    assert "No candidate keeps 10000 steps" in str(plan)


@pytest.mark.slow  # over 3 s: the full tier
def test_default_candidates_are_powers_of_two_up_to_half_of_n():
    plan = plan_dp_training(n=300, target_epsilon=4.0, epochs=5, delta=1e-4)
    assert [c.batch_size for c in plan.candidates] == [16, 32, 64, 128]


def test_str_shows_the_chosen_numbers(heart_rate_plan):
    text = str(heart_rate_plan)
    assert f"noise multiplier  {heart_rate_plan.noise_multiplier:.4g}" in text
    assert "batch size        256" in text
    assert "steps             264" in text
    assert text.count("<- chosen") == 1
    assert f"sampling_rate={256 / 3378:.4g}" in text


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n=0), "n must be a positive integer; received 0"),
        (dict(target_epsilon=0), "target_epsilon must be a finite number > 0; received 0"),
        (dict(epochs=-1), "epochs must be a finite number > 0"),
        (dict(delta=1.0), "delta must be a number in the open interval (0, 1)"),
        (dict(min_steps=0), "min_steps must be a positive integer; received 0"),
        (dict(batch_sizes=[5000]), "batch_sizes must be integers in [1, n] = [1, 3378]"),
        (dict(batch_sizes=[]), "batch_sizes must hold at least one batch size"),
        (dict(batch_sizes=[2.5]), "batch_sizes must be a positive integer; received 2.5"),
        (dict(accountant="gdp"), "accountant must be one of"),
    ],
)
def test_bad_arguments_name_the_argument(changes, message):
    with pytest.raises(ValueError) as error:
        plan_dp_training(**{**HEART_RATE, **changes})
    assert message in str(error.value)


def test_an_unreachable_target_is_an_error():
    with pytest.raises(ValueError, match="No batch size in \\[10\\] reaches target_epsilon"):
        plan_dp_training(n=10, target_epsilon=1e-3, epochs=100, delta=1e-5, batch_sizes=[10])


def test_batches_with_too_many_steps_are_left_out_not_fatal():
    # Issue #26: `pydp-r plan --n 1e10` said no batch size reaches the target: batch 16 makes
    # more than MAX_STEPS steps, and that error ended the search before any larger batch.
    plan = plan_dp_training(
        n=10**10, target_epsilon=3.0, epochs=1, delta=1e-12, batch_sizes=[16, 2**24]
    )
    assert plan.too_many_steps == (16,)
    assert [c.batch_size for c in plan.candidates] == [2**24]
    assert plan.batch_size == 2**24 and plan.epsilon <= 3.0
    assert "Left out: batch sizes [16]" in str(plan)


def test_only_batches_with_too_many_steps_say_so():
    with pytest.raises(ValueError) as error:
        plan_dp_training(n=10**10, target_epsilon=3.0, epochs=1, delta=1e-12, batch_sizes=[16])
    message = str(error.value)
    assert "more than 1e+07 steps" in message and "batch_sizes >= 1000" in message
    assert "reaches target_epsilon" not in message


def test_planner_does_not_import_tensorflow():
    code = "import sys, pydp_r.planner; print('tensorflow' in sys.modules)"
    package_only = "import sys, pydp_r; print('tensorflow' in sys.modules)"
    run = [sys.executable, "-c"]
    if subprocess.run([*run, package_only], capture_output=True, text=True).stdout.strip() == (
        "True"
    ):
        pytest.skip("importing pydp_r itself loads TensorFlow (no lazy package init yet)")
    assert subprocess.run([*run, code], capture_output=True, text=True).stdout.strip() == "False"


# Per wearer: 1000 wearers of at least 32 examples each, epsilon 1 per wearer, 20 epochs.
WEARERS = dict(epochs=20, delta=1e-6, unit="user", max_examples_per_user=32)


@pytest.fixture(scope="module")
def wearer_plan():
    return plan_dp_training(1000, 1.0, **WEARERS, batch_sizes=[64, 128, 256])


def _poisson_epsilon(noise_multiplier, rate, steps, delta):
    import dp_accounting

    event = dp_accounting.PoissonSampledDpEvent(
        rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.rdp.RdpAccountant().compose(event, steps).get_epsilon(delta)


def test_user_level_plan_calibrates_wearers_as_the_example_plan_calibrates_examples(wearer_plan):
    # User-level DP-SGD accounts wearers: the same candidates as a plan over 1000 units.
    same = plan_dp_training(1000, 1.0, 20, 1e-6, batch_sizes=[64, 128, 256])
    assert wearer_plan.candidates == same.candidates
    user = wearer_plan.user_level
    assert (user.expected_batch_size, user.steps) == (same.batch_size, same.steps)
    assert user.noise_multiplier == compute_noise_multiplier(1000, same.batch_size, 1.0, 20, 1e-6)
    assert user.user_epsilon <= 1.0
    assert user.noise_to_signal == pytest.approx(user.noise_multiplier / same.batch_size)


def test_example_route_noise_is_the_smallest_meeting_epsilon_by_group_privacy(wearer_plan):
    from pydp_r.accounting import user_epsilon

    user, example = wearer_plan.user_level, wearer_plan.example_level
    assert (example.sampling_rate, example.steps) == (user.sampling_rate, user.steps)
    rate, steps = example.sampling_rate, example.steps
    assert user_epsilon(example.noise_multiplier, rate, steps, 1e-6, 32) <= 1.0
    assert user_epsilon(example.noise_multiplier * 0.999, rate, steps, 1e-6, 32) > 1.0
    # 32 examples per wearer are sampled: the batch is 32 times the wearers'.
    assert example.expected_batch_size == pytest.approx(32 * user.expected_batch_size)
    assert example.noise_to_signal == pytest.approx(
        example.noise_multiplier / example.expected_batch_size
    )


def test_the_plan_names_the_better_route_and_by_how_much(wearer_plan):
    user, example = wearer_plan.user_level, wearer_plan.example_level
    # At epsilon 1 both routes are very noisy per example, where group privacy is nearly
    # tight: user-level DP-SGD wins, by a few percent only.
    assert wearer_plan.better == "user"
    assert wearer_plan.advantage == pytest.approx(example.noise_to_signal / user.noise_to_signal)
    assert 1.0 < wearer_plan.advantage < 1.2
    text = str(wearer_plan)
    assert f"Better: user-level DP-SGD, by a factor {wearer_plan.advantage:.3g}" in text
    assert f"sampling_rate={user.sampling_rate:.4g}, user_ids=ids" in text
    assert text.count("<- chosen") == 1


def test_wearers_needed_are_the_fewest_that_reach_the_noise_at_epsilon():
    plan = plan_dp_training(None, 1.0, **WEARERS, noise_to_signal=0.05)
    assert plan.solved_for == "n_users" and plan.candidates == ()
    for route, group_size in ((plan.user_level, 1), (plan.example_level, 32)):
        # The least noisy run that keeps min_steps (150) steps: rate 20 / 150.
        assert (route.sampling_rate, route.steps) == (20 / 150, 150)
        assert route.noise_to_signal <= 0.05
        assert (
            route.noise_multiplier / (route.sampling_rate * group_size * (route.n_users - 1)) > 0.05
        )
        assert route.user_epsilon <= 1.0
    user = plan.user_level
    assert _poisson_epsilon(user.noise_multiplier, user.sampling_rate, 150, 1e-6) <= 1.0
    assert plan.advantage == pytest.approx(plan.example_level.n_users / user.n_users)
    assert plan.better == "user"


def test_epsilon_of_n_wearers_at_a_noise_to_signal():
    plan = plan_dp_training(1000, None, **WEARERS, noise_to_signal=0.05, batch_sizes=[64, 128, 256])
    assert plan.solved_for == "epsilon"
    for candidate in plan.candidates:
        assert candidate.noise_multiplier == pytest.approx(0.05 * candidate.batch_size)
        assert candidate.epsilon == compute_epsilon(
            1000, candidate.batch_size, candidate.noise_multiplier, 20, 1e-6
        )
    enough = [c for c in plan.candidates if c.steps >= 150]
    best = min(enough, key=lambda c: c.epsilon)
    assert plan.user_level.user_epsilon == pytest.approx(best.epsilon)
    # The example route at the same noise-to-signal: 32 times the noise on 32 times the rows,
    # its epsilon by group privacy over 32 examples.
    from pydp_r.accounting import user_epsilon

    user, example = plan.user_level, plan.example_level
    assert example.noise_to_signal == pytest.approx(0.05)
    assert example.user_epsilon == user_epsilon(
        32 * user.noise_multiplier, user.sampling_rate, user.steps, 1e-6, 32
    )
    low, high = sorted((user.user_epsilon, example.user_epsilon))
    assert plan.advantage == pytest.approx(high / low)
    assert plan.better == ("user" if user.user_epsilon <= example.user_epsilon else "example")


def test_at_a_larger_epsilon_the_example_route_can_be_the_better_one():
    # Epsilon 8 per wearer: user-level DP-SGD runs at noise multiplier 1.4, where sampling
    # amplifies less, while the example route's 32 times larger noise per example stays where
    # it amplifies fully; group privacy costs less than that here, and the plan says so.
    plan = plan_dp_training(1000, 8.0, **WEARERS, batch_sizes=[128])
    assert plan.better == "example"
    assert plan.advantage == pytest.approx(
        plan.user_level.noise_to_signal / plan.example_level.noise_to_signal
    )
    assert 1.05 < plan.advantage < 1.5
    assert "Better: example-level + group privacy, by a factor" in str(plan)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n=None), "give exactly two of n (wearers), target_epsilon and noise_to_signal"),
        (dict(noise_to_signal=0.1), "give exactly two of"),
        (dict(max_examples_per_user=None), "max_examples_per_user is required with unit='user'"),
        (dict(max_examples_per_user=0), "max_examples_per_user must be a positive integer"),
        (dict(unit="wearer"), "unit must be one of ('example', 'user'); received 'wearer'"),
        (dict(unit="example"), "max_examples_per_user and noise_to_signal are for unit='user'"),
    ],
)
def test_bad_per_wearer_arguments_name_the_argument(changes, message):
    arguments = {"n": 1000, "target_epsilon": 1.0, **WEARERS, **changes}
    with pytest.raises(ValueError) as error:
        plan_dp_training(**arguments)
    assert message in str(error.value)


def test_noise_to_signal_is_checked():
    with pytest.raises(ValueError, match="noise_to_signal must be a number > 0"):
        plan_dp_training(1000, None, **WEARERS, noise_to_signal=0)
