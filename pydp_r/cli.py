"""The `pydp-r` command line: privacy accounting without writing Python.

    pydp-r epsilon --n 60000 --batch-size 256 --noise-multiplier 1.1 --epochs 60 --delta 1e-5
    pydp-r noise --n 60000 --batch-size 256 --target-epsilon 3 --epochs 60 --delta 1e-5
    pydp-r statement --n 60000 --batch-size 256 --noise-multiplier 1.1 --epochs 60 --delta 1e-5
    pydp-r plan --n 60000 --target-epsilon 3 --epochs 60 --delta 1e-5
    pydp-r plan --unit user --n 1000 --target-epsilon 1 --max-examples-per-user 32 --epochs 20 \\
        --delta 1e-6
    pydp-r compute_dp_sgd_privacy --N=60000 --batch_size=256 --noise_multiplier=1.1 --epochs=60

The last is TF Privacy's `compute_dp_sgd_privacy` script (its flags and defaults, its
statement). TF Privacy's flag spellings (`--N`, `--batch_size`, `--noise_multiplier`,
`--target_epsilon`, `--max_examples_per_user`, `--accountant_type`, `--used_microbatching`)
are also accepted by the other subcommands.

Bad values print the reason to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence

from pydp_r import accounting
from pydp_r import planner as dp_planner
from pydp_r.audit import __main__ as audit_main

USAGE_ERROR = 2


def _whole_number(text: str) -> int:
    """A count as typed on a command line: 60000, 60_000 or 6e4 (not 6.5, not "many").

    Its range is checked by the function it is passed to, whose message names the argument.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; received {text!r}") from None
    if not (math.isfinite(number) and number.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a whole number; received {text!r}")
    return int(number)


def _add_training_arguments(parser: argparse.ArgumentParser, noise: bool) -> None:
    parser.add_argument(
        "--n",
        "--N",
        dest="n",
        type=_whole_number,
        required=True,
        help="number of training examples",
    )
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=_whole_number,
        required=True,
        help="(expected) examples per step, <= n",
    )
    if noise:
        parser.add_argument(
            "--noise-multiplier",
            "--noise_multiplier",
            dest="noise_multiplier",
            type=float,
            required=True,
            help="noise std over l2_norm_clip, >= 0",
        )
    parser.add_argument("--epochs", type=float, required=True, help="passes over the data, > 0")
    parser.add_argument("--delta", type=float, required=True, help="target delta, in (0, 1)")


def _add_accountant_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accountant",
        "--accountant_type",
        dest="accountant",
        type=str.lower,  # TF Privacy spells them RDP, PLD
        choices=accounting.ACCOUNTANTS,
        default="rdp",
        help="privacy accountant (default: rdp)",
    )
    parser.add_argument(
        "--microbatching",
        "--used_microbatching",
        dest="microbatching",
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
        unit=args.unit,
    ).rstrip("\n")


def _add_unit_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--unit",
        choices=("example", "user"),
        default="example",
        help=f"privacy unit (default: example); user: {what}",
    )


def _absl_bool(text: str) -> bool:
    """A boolean flag value as absl parses it (true/false, t/f, 1/0, any case)."""
    value = text.lower()
    if value in ("true", "t", "1"):
        return True
    if value in ("false", "f", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; received {text!r}")


def _add_tf_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    """TF Privacy 0.9.0's compute_dp_sgd_privacy flags, names and defaults."""
    parser.add_argument(
        "--N", dest="n", type=_whole_number, required=True, help="training examples"
    )
    parser.add_argument(
        "--batch_size",
        type=_whole_number,
        required=True,
        help="examples per batch, however microbatched",
    )
    parser.add_argument(
        "--noise_multiplier", type=float, required=True, help="noise std over the clip norm"
    )
    parser.add_argument("--epochs", type=float, required=True, help="may be fractional")
    parser.add_argument("--delta", type=float, default=1e-6, help="target delta (default 1e-6)")
    parser.add_argument(
        "--used_microbatching",
        type=_absl_bool,
        nargs="?",
        const=True,
        default=True,
        help="microbatches of more than one example (default true; doubles sensitivity)",
    )
    parser.add_argument(
        "--noused_microbatching", dest="used_microbatching", action="store_false", help="= false"
    )
    parser.add_argument(
        "--max_examples_per_user",
        type=_whole_number,
        default=None,
        help="adds a user-level epsilon",
    )
    parser.add_argument("--accountant_type", type=str.upper, choices=("RDP", "PLD"), default="RDP")


def _tf_privacy_statement(args: argparse.Namespace) -> str:
    # Imported here: it is only needed by this subcommand.
    from pydp_r.tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib as lib

    return lib.compute_dp_sgd_privacy_statement(
        args.n,
        args.batch_size,
        args.epochs,
        args.noise_multiplier,
        args.delta,
        used_microbatching=args.used_microbatching,
        max_examples_per_user=args.max_examples_per_user,
        accountant_type=lib.AccountantType(args.accountant_type),
    ).rstrip("\n")


def _plan(args: argparse.Namespace) -> str:
    return str(
        dp_planner.plan_dp_training(
            args.n,
            args.target_epsilon,
            args.epochs,
            args.delta,
            batch_sizes=args.batch_sizes,
            min_steps=args.min_steps,
            accountant=args.accountant,
            unit=args.unit,
            max_examples_per_user=args.max_examples_per_user,
            noise_to_signal=args.noise_to_signal,
        )
    )


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n",
        "--N",
        dest="n",
        type=_whole_number,
        default=None,
        help="number of training examples (wearers with --unit user; omit it there to ask "
        "how many are needed)",
    )
    parser.add_argument(
        "--target-epsilon",
        "--target_epsilon",
        dest="target_epsilon",
        type=float,
        default=None,
        help="epsilon budget, > 0 (omit it with --unit user to ask for the epsilon)",
    )
    parser.add_argument("--epochs", type=float, required=True, help="passes over the data, > 0")
    parser.add_argument("--delta", type=float, required=True, help="target delta, in (0, 1)")
    _add_unit_argument(
        parser,
        "per wearer, compared with example-level training and group privacy; give two of "
        "--n, --target-epsilon and --noise-to-signal",
    )
    parser.add_argument(
        "--max-examples-per-user",
        "--max_examples_per_user",
        dest="max_examples_per_user",
        type=_whole_number,
        default=None,
        help="with --unit user: examples each wearer brings to a step",
    )
    parser.add_argument(
        "--noise-to-signal",
        dest="noise_to_signal",
        type=float,
        default=None,
        help="with --unit user: the noise-to-signal to reach (noise std / (batch * clip))",
    )
    parser.add_argument(
        "--batch-sizes",
        dest="batch_sizes",
        type=_whole_number,
        nargs="+",
        default=None,
        help="candidate batch sizes (default: powers of two from 16 up to n / 2)",
    )
    parser.add_argument(
        "--min-steps",
        dest="min_steps",
        type=_whole_number,
        default=dp_planner.DEFAULT_MIN_STEPS,
        help=f"fewest steps a plan keeps (default: {dp_planner.DEFAULT_MIN_STEPS})",
    )
    parser.add_argument(
        "--accountant",
        choices=accounting.ACCOUNTANTS,
        default="rdp",
        help="privacy accountant (default: rdp)",
    )


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
    noise.add_argument(
        "--target-epsilon",
        "--target_epsilon",
        dest="target_epsilon",
        type=float,
        required=True,
        help="epsilon budget, > 0",
    )
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
        "--used_microbatching",
        dest="microbatching",
        action="store_true",
        help="gradients were clipped per microbatch of several examples (doubles sensitivity)",
    )
    statement.add_argument(
        "--max-examples-per-user",
        "--max_examples_per_user",
        dest="max_examples_per_user",
        type=_whole_number,
        default=None,
        help="most examples one person contributes (adds a user-level epsilon; with "
        "--unit user, the examples each user brings)",
    )
    _add_unit_argument(
        statement,
        "user-level DP-SGD, --n counts users and --batch-size the expected users per step",
    )
    statement.set_defaults(handler=_statement)

    plan = commands.add_parser(
        "plan",
        help="batch size, noise multiplier and steps for a target epsilon",
        description=_doc_line(dp_planner.plan_dp_training),
    )
    _add_plan_arguments(plan)
    plan.set_defaults(handler=_plan)

    tf_privacy = commands.add_parser(
        "compute_dp_sgd_privacy",
        help="TF Privacy's compute_dp_sgd_privacy script: its flags, its privacy statement",
        description="TF Privacy 0.9.0's compute_dp_sgd_privacy: the same flags and defaults, "
        "the same epsilons in its statement.",
    )
    _add_tf_privacy_arguments(tf_privacy)
    tf_privacy.set_defaults(handler=_tf_privacy_statement)

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
    # dp-accounting's RDP accountant logs each order it drops; the figures already account
    # for that, so a terminal user does not need the lines.
    logging.getLogger("absl").setLevel(logging.ERROR)
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
