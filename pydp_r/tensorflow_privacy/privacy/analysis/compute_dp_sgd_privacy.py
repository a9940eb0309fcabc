"""TF Privacy's `privacy.analysis.compute_dp_sgd_privacy` on pydp_r: the script and its function.

As a script it takes TF Privacy's flags and prints `compute_dp_sgd_privacy_statement`:

    python -m pydp_r.tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy \\
        --N=60000 --batch_size=256 --noise_multiplier=1.1 --epochs=60 --delta=1e-5

(the same as `pydp-r compute_dp_sgd_privacy ...`). As a module it offers
`compute_dp_sgd_privacy(n, batch_size, noise_multiplier, epochs, delta)`, the classic
`(epsilon, optimal_order)` that TF Privacy's tutorials call as
`compute_dp_sgd_privacy.compute_dp_sgd_privacy(...)`, and `compute_dp_sgd_privacy_statement`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydp_r.tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib import (
    AccountantType,
    compute_dp_sgd_privacy,
    compute_dp_sgd_privacy_statement,
)

__all__ = [
    "AccountantType",
    "compute_dp_sgd_privacy",
    "compute_dp_sgd_privacy_statement",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script with `argv` (default: the process arguments); returns the exit status."""
    from pydp_r import cli

    arguments = sys.argv[1:] if argv is None else list(argv)
    return cli.main(["compute_dp_sgd_privacy", *arguments])


if __name__ == "__main__":
    sys.exit(main())
