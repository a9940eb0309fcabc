"""`python -m pydp_r.audit [--quick] [--audits step membership exposure] ...`: print the report.

The same arguments serve the `pydp-r audit` subcommand (`pydp_r.cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydp_r.audit.report import AUDITS, run_audit_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the audit report's options to `parser`."""
    parser.add_argument("--audits", nargs="+", choices=AUDITS, default=list(AUDITS))
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--l2-norm-clip", type=float, default=1.0)
    parser.add_argument("--num-trials", type=int, default=5000, help="step-audit trials per side")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs")
    parser.add_argument("--seed", type=int, default=0)


def report(args: argparse.Namespace) -> str:
    """The audit report for parsed arguments; raises ValueError for values out of range."""
    return run_audit_report(
        audits=args.audits,
        noise_multiplier=args.noise_multiplier,
        l2_norm_clip=args.l2_norm_clip,
        num_trials=args.num_trials,
        delta=args.delta,
        quick=args.quick,
        seed=args.seed,
    ).rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, print the report; bad values exit with status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m pydp_r.audit",
        description="Empirical privacy audits of pydp_r's DP optimizers.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        text = report(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
