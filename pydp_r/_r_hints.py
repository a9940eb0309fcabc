"""Fixes suggested in error messages, written in the syntax of the language that called us.

The R package pydpr drives this core through reticulate, and its users call
`replace_batch_norm(model)`, not `pydp_r.replace_batch_norm(model)`. Errors raised inside
`model$fit()` never pass through pydpr's R wrappers, so the message itself must be in R syntax
when Python runs embedded in R. reticulate imports its helper package `rpytools` into every
Python it embeds, which is how we tell.
"""

from __future__ import annotations

import sys


def called_from_r() -> bool:
    """True when this Python runs inside R through reticulate."""
    return "rpytools" in sys.modules


def fix_hint(python_code: str, r_code: str) -> str:
    """`r_code` when called from R (reticulate), else `python_code`.

    Args:
        python_code: The fix as a Python user writes it, e.g.
            "model = pydp_r.replace_batch_norm(model)".
        r_code: The same fix in R with pydpr, e.g. "model <- replace_batch_norm(model)".

    Returns:
        One of the two strings.
    """
    return r_code if called_from_r() else python_code
