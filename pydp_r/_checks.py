"""Argument checks shared by the public functions: each error names the argument, the value
received and the valid range. Numbers may arrive as integral floats (R's numbers are doubles).

The ranges of the accounting arguments are data (`ACCOUNTING_RANGES`, `ACCOUNTANTS`): the R
package checks the same arguments before it starts Python, from a copy of this table in
`R/checks.R`, and `tests/testthat/test-checks.R` fails when the two tables or their messages
differ.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

ACCOUNTANTS = ("rdp", "pld")

# The largest noise multiplier accounted. Beyond it the RDP accountant's epsilon has long
# stopped falling: its largest order, 1024, sets a floor near 0.0035 at delta 1e-5 however
# large the noise, so a target below that floor is unreachable and is reported as such.
MAX_NOISE_MULTIPLIER = 1e4


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers an argument accepts: an interval, optionally of whole numbers only.

    Attributes:
        minimum, maximum: The interval's ends (`math.inf` for none above).
        minimum_open, maximum_open: Whether the end itself is excluded.
        whole: Whether only whole numbers (ints or integral floats) are accepted.
    """

    minimum: float
    maximum: float = math.inf
    minimum_open: bool = False
    maximum_open: bool = False
    whole: bool = False

    def contains(self, number: float) -> bool:
        """Whether `number` (a float, not NaN) lies in the range."""
        above = number > self.minimum if self.minimum_open else number >= self.minimum
        below = number < self.maximum if self.maximum_open else number <= self.maximum
        return above and below and (not self.whole or number.is_integer())

    def describe(self) -> str:
        """The range in words, as the error messages give it (e.g. "a positive integer")."""
        if self.whole and math.isinf(self.maximum):
            return "a positive integer" if self.minimum == 1 else f"an integer >= {self.minimum:g}"
        noun = "an integer" if self.whole else "a number"
        if math.isinf(self.maximum):
            relation = ">" if self.minimum_open else ">="
            finite = "a finite number" if self.maximum_open else noun
            return f"{finite} {relation} {self.minimum:g}"
        if self.minimum_open and self.maximum_open:
            return f"{noun} in the open interval ({self.minimum:g}, {self.maximum:g})"
        left = "(" if self.minimum_open else "["
        right = ")" if self.maximum_open else "]"
        return f"{noun} in {left}{self.minimum:g}, {self.maximum:g}{right}"


# The accounting arguments' ranges (`batch_size` is also at most `n`).
ACCOUNTING_RANGES = {
    "n": Range(1, whole=True),
    "batch_size": Range(1, whole=True),
    "noise_multiplier": Range(0, MAX_NOISE_MULTIPLIER),
    "epochs": Range(0, minimum_open=True, maximum_open=True),
    "delta": Range(0, 1, minimum_open=True, maximum_open=True),
    "target_epsilon": Range(0, minimum_open=True, maximum_open=True),
    "max_examples_per_user": Range(1, whole=True),
    "min_steps": Range(1, whole=True),
}


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

    Strings are refused, although `float()` would parse "12": R and the command line hand
    numbers over as numbers, and a string here is a mistake.

    Raises:
        ValueError: Naming `name`, for booleans, strings, non-numbers, NaN and values outside
            the range.
    """
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be {valid}; received {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {valid}; received {value!r}.") from None
    if math.isnan(number) or not ok(number):
        raise ValueError(f"{name} must be {valid}; received {value!r}.")
    return number


def check_in_range(name: str, value: Any, valid_range: Range) -> float:
    """A number in `valid_range`: an int when the range is whole, else a float.

    Raises:
        ValueError: Naming `name`, with the range in words, for anything else.
    """
    if valid_range.whole and math.isinf(valid_range.maximum) and not valid_range.minimum_open:
        return check_count(name, value, int(valid_range.minimum))
    return check_real(name, value, valid_range.describe(), valid_range.contains)


def check_open_probability(name: str, value: Any) -> float:
    """A number in the open interval (0, 1): a delta, a confidence, a fraction."""
    return check_real(name, value, "a number in the open interval (0, 1)", lambda x: 0 < x < 1)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0: a clipping bound, a noise scale, a sensitivity."""
    return check_real(name, value, "a finite number > 0", lambda x: 0 < x < math.inf)


def check_finite_scores(name: str, scores: Any, minimum: int) -> Any:
    """At least `minimum` finite numbers (any shape), flattened into a float64 NumPy array.

    Raises:
        ValueError: Naming `name`, for too few values or NaN or infinite ones.
    """
    import numpy as np  # here, so that importing the checks stays cheap

    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = bool(np.all(np.isfinite(array)))
    if array.size < minimum or not finite:
        raise ValueError(
            f"{name} must hold at least {minimum} finite numbers; received {array.size} values"
            + ("" if finite else " including NaN or infinity")
            + "."
        )
    return array


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
    """`n` and `batch_size`: positive integers, `batch_size` at most `n`."""
    n = check_in_range("n", n, ACCOUNTING_RANGES["n"])
    batch_size = check_in_range("batch_size", batch_size, ACCOUNTING_RANGES["batch_size"])
    if batch_size > n:
        raise ValueError(
            f"batch_size must be an integer in [1, n] = [1, {n}]; received {batch_size!r}."
        )
    return n, batch_size


def check_noise_multiplier(noise_multiplier: Any) -> float:
    """Noise std over the clipping bound, in [0, `MAX_NOISE_MULTIPLIER`]."""
    return check_in_range(
        "noise_multiplier", noise_multiplier, ACCOUNTING_RANGES["noise_multiplier"]
    )


def check_epochs(epochs: Any) -> float:
    """Passes over the data, a finite number > 0 (may be fractional)."""
    return check_in_range("epochs", epochs, ACCOUNTING_RANGES["epochs"])


def check_delta(delta: Any) -> float:
    """A delta, in the open interval (0, 1)."""
    return check_in_range("delta", delta, ACCOUNTING_RANGES["delta"])


def check_target_epsilon(target_epsilon: Any) -> float:
    """An epsilon budget, a finite number > 0."""
    return check_in_range("target_epsilon", target_epsilon, ACCOUNTING_RANGES["target_epsilon"])


def check_accountant(accountant: Any) -> str:
    """One of `ACCOUNTANTS`, in any case ("RDP" is TF Privacy's spelling); returned lower-case."""
    name = accountant.lower() if isinstance(accountant, str) else accountant
    if name not in ACCOUNTANTS:
        choices = ", ".join(f'"{choice}"' for choice in ACCOUNTANTS)
        raise ValueError(f"accountant must be one of {choices}; received {accountant!r}.")
    return name
