"""pydp_r._checks: the one home of argument checks, their ranges and their messages."""

import math

import numpy as np
import pytest

from pydp_r import _checks as checks
from pydp_r.accounting import compute_epsilon


def test_strings_are_refused_although_float_would_parse_them():
    # float("1000") is 1000.0, so n="1000" used to pass in Python while R refused it.
    with pytest.raises(ValueError, match="n must be a positive integer; received '1000'"):
        compute_epsilon("1000", 32, 1.1, 2, 1e-5)
    with pytest.raises(ValueError, match="delta must be"):
        compute_epsilon(1000, 32, 1.1, 2, b"0.5")
    assert checks.check_real("x", np.float32(0.5), "a number", lambda v: True) == 0.5


@pytest.mark.parametrize("value, expected", [(12, 12), (12.0, 12), (np.int64(12), 12)])
def test_counts_accept_integral_floats_from_r(value, expected):
    count = checks.check_count("num_timesteps", value)
    assert count == expected and type(count) is int


@pytest.mark.parametrize("value", [12.5, 0, -1, True, None, "12", math.inf, math.nan])
def test_counts_refuse_the_rest_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"num_timesteps must be a positive integer; received"):
        checks.check_count("num_timesteps", value)


# Per range: values inside, values just outside (NaN and the wrong types always outside).
INSIDE_OUTSIDE = {
    "n": ([1, 2.0, 10**12], [0, 1.5, -3, math.inf]),
    "batch_size": ([1, 32.0], [0, 2.5]),
    "noise_multiplier": ([0, 1.1, checks.MAX_NOISE_MULTIPLIER], [-1e-9, 10000.5, math.inf]),
    "epochs": ([1e-9, 0.5, 3], [0, -1, math.inf]),
    "delta": ([1e-12, 0.5], [0, 1, 1.5]),
    "target_epsilon": ([1e-9, 100], [0, -1, math.inf]),
    "max_examples_per_user": ([1, 12.0], [0, 1.5]),
    "min_steps": ([1, 150], [0, 0.5]),
}


def test_every_accounting_range_is_tested():
    assert set(INSIDE_OUTSIDE) == set(checks.ACCOUNTING_RANGES)


@pytest.mark.parametrize("name", sorted(INSIDE_OUTSIDE))
def test_accounting_ranges_accept_and_refuse_as_they_say(name):
    valid_range = checks.ACCOUNTING_RANGES[name]
    inside, outside = INSIDE_OUTSIDE[name]
    for value in inside:
        assert checks.check_in_range(name, value, valid_range) == value
    for value in [*outside, math.nan, "1", None, True]:
        with pytest.raises(ValueError) as error:
            checks.check_in_range(name, value, valid_range)
        assert str(error.value) == f"{name} must be {valid_range.describe()}; received {value!r}."


def test_range_words():
    assert checks.Range(1, whole=True).describe() == "a positive integer"
    assert checks.Range(0, whole=True).describe() == "an integer >= 0"
    assert checks.Range(0, 1e4).describe() == "a number in [0, 10000]"
    assert checks.Range(0, 1, True, True).describe() == "a number in the open interval (0, 1)"
    assert checks.Range(0, 1, True).describe() == "a number in (0, 1]"
    assert checks.Range(0, math.inf, True, True).describe() == "a finite number > 0"
    assert checks.Range(0).describe() == "a number >= 0"


def test_the_accounting_checks_read_the_table(monkeypatch):
    # One source of truth: a range changed in the table changes the check.
    monkeypatch.setitem(checks.ACCOUNTING_RANGES, "noise_multiplier", checks.Range(0, 5.0))
    with pytest.raises(ValueError, match=r"noise_multiplier must be a number in \[0, 5\]"):
        checks.check_noise_multiplier(6.0)
    assert checks.check_accountant("PLD") == "pld"
    with pytest.raises(ValueError, match='accountant must be one of "rdp", "pld"; received 3'):
        checks.check_accountant(3)


def test_shared_audit_checks():
    assert checks.check_open_probability("confidence", 0.95) == 0.95
    with pytest.raises(ValueError, match=r"confidence must be a number in the open interval"):
        checks.check_open_probability("confidence", 1.0)
    with pytest.raises(ValueError, match="l2_norm_clip must be a finite number > 0"):
        checks.check_positive("l2_norm_clip", 0)
    scores = checks.check_finite_scores("scores", [[1, 2], [3, 4]], 4)
    assert scores.dtype == np.float64 and scores.shape == (4,)
    with pytest.raises(ValueError, match="scores must hold at least 5 finite numbers"):
        checks.check_finite_scores("scores", [1, 2, 3, 4], 5)
    with pytest.raises(ValueError, match="including NaN or infinity"):
        checks.check_finite_scores("scores", [1, math.nan], 1)


def test_sequences_take_counts_as_every_other_function_does():
    from pydp_r.data.sequences import sliding_sequences

    signal = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.testing.assert_array_equal(sliding_sequences(signal, 12.0), sliding_sequences(signal, 12))
    with pytest.raises(ValueError, match=r"num_timesteps must be a positive integer; received 2.5"):
        sliding_sequences(signal, 2.5)
