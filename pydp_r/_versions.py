"""Release numbers of the libraries pydp_r supports, read without importing them."""

from __future__ import annotations

# From this TensorFlow on, oneDNN's kernels give right vectorized per-example gradients
# (`pydp_r/__init__.py` turns them off below it; `_keras_seam.check_tensorflow` checks).
ONEDNN_SAFE_TENSORFLOW = (2, 21)


def major_minor(version: str) -> tuple[int, int]:
    """`"3.15.1"` -> `(3, 15)`; pre-release tails (`"2.21.0rc1"`) are ignored."""
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return parts[0], parts[1] if len(parts) > 1 else 0
