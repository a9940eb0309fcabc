"""The `pydp-r` command line: privacy accounting without writing Python.

    pydp-r epsilon --n 60000 --batch-size 256 --noise-multiplier 1.1 --epochs 60 --delta 1e-5
    pydp-r noise --n 60000 --batch-size 256 --target-epsilon 3 --epochs 60 --delta 1e-5
    pydp-r statement --n 60000 --batch-size 256 --noise-multiplier 1.1 --epochs 60 --delta 1e-5

Bad values print the reason to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydp_r import accounting
from pydp_r.audit import __main__ as audit_main

USAGE_ERROR = 2


def _add_training_arguments(parser: argparse.ArgumentParser, noise: bool) -> None:
    parser.add_argument("--n", type=int, required=True, help="number of training examples")
    parser.add_argument(
        "--batch-size", type=int, required=True, help="(expected) examples per step, <= n"
    )
    if noise:
        parser.add_argument(
            "--noise-multiplier",
            type=float,
            required=True,
            help="noise std over l2_norm_clip, >= 0",
        )
    parser.add_argument("--epochs", type=float, required=True, help="passes over the data, > 0")
    parser.add_argument("--delta", type=float, required=True, help="target delta, in (0, 1)")


def _add_accountant_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accountant",
        choices=accounting.ACCOUNTANTS,
        default="rdp",
        help="privacy accountant (default: rdp)",
    )
    parser.add_argument(
        "--microbatching",
        action="store_true",
        help="gradients were clipped per microbatch of several examples (doubles sensitivity)",
    )


def _epsilon(args: argparse.Namespace) -> str:
    return repr(
        accounting.compute_epsilon(
            args.n,
            args.batch_size,
            args.noise_multiplier,
            args.epochs,
            args.delta,
            accountant=args.accountant,
            used_microbatching=args.microbatching,
        )
    )


def _noise(args: argparse.Namespace) -> str:
    return repr(
        accounting.compute_noise_multiplier(
            args.n,
            args.batch_size,
            args.target_epsilon,
            args.epochs,
            args.delta,
            accountant=args.accountant,
            used_microbatching=args.microbatching,
        )
    )


def _statement(args: argparse.Namespace) -> str:
    return accounting.privacy_statement(
        args.n,
        args.batch_size,
        args.noise_multiplier,
        args.epochs,
        args.delta,
        used_microbatching=args.microbatching,
        max_examples_per_user=args.max_examples_per_user,
    ).rstrip("\n")


def build_parser() -> argparse.ArgumentParser:
    """The `pydp-r` argument parser, one subcommand per task (others may be added to it).

    Returns:
        The parser; each subcommand sets `handler`, a function of the parsed arguments that
        returns the text to print.
    """
    parser = argparse.ArgumentParser(
        prog="pydp-r", description="Privacy accounting and audits for DP-SGD training."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    epsilon = commands.add_parser(
        "epsilon",
        help="epsilon of DP-SGD with Poisson sampling",
        description=_doc_line(accounting.compute_epsilon),
    )
    _add_training_arguments(epsilon, noise=True)
    _add_accountant_arguments(epsilon)
    epsilon.set_defaults(handler=_epsilon)

    noise = commands.add_parser(
        "noise",
        help="smallest noise multiplier meeting a target epsilon",
        description=_doc_line(accounting.compute_noise_multiplier),
    )
    _add_training_arguments(noise, noise=False)
    noise.add_argument("--target-epsilon", type=float, required=True, help="epsilon budget, > 0")
    _add_accountant_arguments(noise)
    noise.set_defaults(handler=_noise)

    statement = commands.add_parser(
        "statement",
        help="plain-text privacy statement with its assumptions",
        description=_doc_line(accounting.privacy_statement),
    )
    _add_training_arguments(statement, noise=True)
    statement.add_argument(
        "--microbatching",
        action="store_true",
        help="gradients were clipped per microbatch of several examples (doubles sensitivity)",
    )
    statement.add_argument(
        "--max-examples-per-user",
        type=int,
        default=None,
        help="most examples one person contributes (adds a user-level epsilon)",
    )
    statement.set_defaults(handler=_statement)

    audit = commands.add_parser(
        "audit",
        help="empirical privacy audits of the DP optimizers (epsilon lower bounds)",
        description="Step-level audit, membership inference and canary exposure.",
    )
    audit_main.add_arguments(audit)
    audit.set_defaults(handler=audit_main.report)
    return parser


def _doc_line(function: Callable[..., object]) -> str:
    return (function.__doc__ or "").strip().splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pydp-r` with `argv` (default: the process arguments) and return the exit status.

    Args:
        argv: Arguments after the program name, e.g. `["epsilon", "--n", "60000", ...]`.

    Returns:
        0 on success; 2 when the arguments are malformed or a value is out of range (the
        reason is printed to stderr, without a traceback).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # argparse's own usage errors, --help
        return int(exit_request.code or 0)
    try:
        output = args.handler(args)
    except ValueError as error:
        print(f"pydp-r {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
