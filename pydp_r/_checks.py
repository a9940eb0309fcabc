"""Argument checks shared by the public functions: each error names the argument, the value
received and the valid range. Numbers may arrive as integral floats (R's numbers are doubles)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

ACCOUNTANTS = ("rdp", "pld")

# The largest noise multiplier accounted. Beyond it the RDP accountant's epsilon has long
# stopped falling (its largest order, 1024, sets a floor near 0.0035 at delta 1e-5) and from
# about 1e5 its floating point returns 0, a claim of perfect privacy; targets below the floor
# are declared unreachable instead of being "met" by that rounding.
MAX_NOISE_MULTIPLIER = 1e4


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """An integer >= `minimum`, given as an int or an integral float.

    Raises:
        ValueError: Naming `name`, for booleans, non-numbers, non-integers and values below
            `minimum`.
    """
    valid = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    number = check_real(
        name, value, valid, lambda v: math.isfinite(v) and v.is_integer() and v >= minimum
    )
    if isinstance(value, numbers.Integral):
        return int(value)  # exact: a float holds integers only up to 2**53
    return int(number)


def check_real(name: str, value: Any, valid: str, ok: Callable[[float], bool]) -> float:
    """A real number for which `ok` holds; `valid` describes the range in the error message.

    Raises:
        ValueError: Naming `name`, for booleans, non-numbers, NaN and values outside the range.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {valid}; received {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {valid}; received {value!r}.") from None
    if math.isnan(number) or not ok(number):
        raise ValueError(f"{name} must be {valid}; received {value!r}.")
    return number


def check_eager_execution(what: str) -> None:
    """Refuse TF1 graph mode (`tf.compat.v1.disable_v2_behavior()`), which Keras 3 cannot train in.

    Does not import TensorFlow: without it loaded, graph mode cannot be on.

    Args:
        what: What is being built, for the message (e.g. a class name).

    Raises:
        RuntimeError: When eager execution is disabled.
    """
    import sys

    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or tensorflow.compat.v1.executing_eagerly_outside_functions():
        return
    raise RuntimeError(
        f"{what} needs TensorFlow's eager execution (TF2 behaviour), which Keras 3 requires, but "
        "it is disabled, e.g. by tf.compat.v1.disable_v2_behavior() or "
        "tf.compat.v1.disable_eager_execution(). Remove that call (TF Privacy's TF1 tutorials "
        "make it) and run the script in TensorFlow 2's default eager mode."
    )


def check_n_and_batch_size(n: Any, batch_size: Any) -> tuple[int, int]:
    n = check_count("n", n)
    batch_size = check_count("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(
            f"batch_size must be an integer in [1, n] = [1, {n}]; received {batch_size!r}."
        )
    return n, batch_size


def check_noise_multiplier(noise_multiplier: Any) -> float:
    return check_real(
        "noise_multiplier",
        noise_multiplier,
        f"a number in [0, {MAX_NOISE_MULTIPLIER:g}]",
        lambda x: 0 <= x <= MAX_NOISE_MULTIPLIER,
    )


def check_epochs(epochs: Any) -> float:
    return check_real(
        "epochs", epochs, "a finite number > 0 (may be fractional)", lambda x: 0 < x < math.inf
    )


def check_delta(delta: Any) -> float:
    return check_real("delta", delta, "a number in the open interval (0, 1)", lambda x: 0 < x < 1)


def check_target_epsilon(target_epsilon: Any) -> float:
    return check_real(
        "target_epsilon", target_epsilon, "a finite number > 0", lambda x: 0 < x < math.inf
    )


def check_accountant(accountant: Any) -> str:
    name = accountant.lower() if isinstance(accountant, str) else accountant
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}; received {accountant!r}.")
    return name
