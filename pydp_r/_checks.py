"""Argument checks shared by the public functions: each error names the argument, the value
received and the valid range. Numbers may arrive as integral floats (R's numbers are doubles)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


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
