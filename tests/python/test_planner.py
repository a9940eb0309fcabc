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
