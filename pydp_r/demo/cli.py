"""The command line: options -> data -> recipes -> runs -> report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from pydp_r.demo.data import prepare_data, public_tuning_arrays
from pydp_r.demo.population import TRAINING_USERS
from pydp_r.demo.recipes import DEFAULT_SEEDS, TARGET_EPSILON, TUNING_SEEDS
from pydp_r.demo.report import report, setup_lines
from pydp_r.demo.runs import run_recipes, say
from pydp_r.demo.tuning import choose_recipes


@dataclass(frozen=True)
class DemoOptions:
    """The demo's settings; the defaults are `make demo`'s."""

    data_dir: str | None = None
    subject: str = "S1"
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    epochs: int = 20
    target_epsilon: float = TARGET_EPSILON
    batch_size: int | None = None
    learning_rate: float = 3e-3
    l2_norm_clip: float = 1.0
    averaging_decay: float = 0.99  # 0 turns averaging off
    dp_normalization: str = "none"
    tune: bool = False
    no_scaling: bool = False
    sweep: bool = False
    sweep_epsilon: list[float] = field(default_factory=lambda: [0.5, 1, 2, 4, 8])
    no_attack: bool = False
    verbose: bool = False
    output: str = "demo-output"
    privacy_unit: str = "example"  # "user": the per-wearer demo on a synthetic population
    users: int = TRAINING_USERS


def parse_args(argv: list[str] | None = None) -> DemoOptions:
    """The options from the command line (`argv`, default `sys.argv[1:]`)."""
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(
        prog="python -m pydp_r.demo",
        description="Heart rate from PPG, non-private vs DP, mean ± sd over seeds.",
    )
    parser.add_argument(
        "--data-dir", help="folder with PPG-DaLiA S*.pkl (default: $PPG_DALIA_DIR, else synthetic)"
    )
    parser.add_argument("--subject", default=defaults.subject)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=defaults.seeds,
        help="subject and training seeds (default: 0 1 2 3 4; the recipes were tuned on 100-102)",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--target-epsilon", type=float, default=defaults.target_epsilon)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="DP batch (default: the planner's choice)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="DP-Adam's initial rate (what --tune chose)",
    )
    parser.add_argument("--l2-norm-clip", type=float, default=defaults.l2_norm_clip)
    parser.add_argument(
        "--averaging-decay",
        type=float,
        default=defaults.averaging_decay,
        help="parameter averaging of the DP model (EMA decay; 0 turns it off)",
    )
    parser.add_argument(
        "--dp-normalization",
        choices=("group", "none"),
        default=defaults.dp_normalization,
        help="normalization of the DP model (BatchNormalization is refused under DP; "
        "GroupNormalization removed the signal level in tuning)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help=f"first choose both recipes on public synthetic subjects {TUNING_SEEDS} "
        "(a few minutes)",
    )
    parser.add_argument(
        "--no-scaling",
        action="store_true",
        help="feed raw features (default: scaled with a public synthetic subject's statistics)",
    )
    parser.add_argument("--sweep", action="store_true", help="also sweep target epsilons")
    parser.add_argument("--sweep-epsilon", type=float, nargs="+", default=defaults.sweep_epsilon)
    parser.add_argument("--no-attack", action="store_true", help="skip membership inference")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="a progress line every epoch (default: every quarter of a run)",
    )
    parser.add_argument("--output", default=defaults.output)
    parser.add_argument(
        "--privacy-unit",
        choices=("example", "user"),
        default=defaults.privacy_unit,
        help="example: one 24-s sequence of one subject (make demo); user: one wearer, "
        "user-level DP on a synthetic population tested on held-out wearers (uses --seeds, "
        "--target-epsilon, --users, --tune, --no-attack, --verbose, --output)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=defaults.users,
        help=f"training wearers per population with --privacy-unit user (default "
        f"{defaults.users}; the recipe was tuned for it)",
    )
    return DemoOptions(**vars(parser.parse_args(argv)))


def run_demo(options: DemoOptions) -> dict:
    """The whole demo for `options`: prints progress and the report, returns results.json's."""
    output = Path(options.output)
    if options.privacy_unit == "user":
        from pydp_r.demo.user_level import run_user_demo

        return run_user_demo(
            options.seeds,
            output,
            target_epsilon=options.target_epsilon,
            training_users=options.users,
            tune=options.tune,
            verbose=options.verbose,
            attack=not options.no_attack,
        )
    output.mkdir(parents=True, exist_ok=True)
    data = prepare_data(options.seeds, options.data_dir, options.subject, not options.no_scaling)
    recipes = choose_recipes(
        data.n_train,
        epochs=options.epochs,
        target_epsilon=options.target_epsilon,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        l2_norm_clip=options.l2_norm_clip,
        averaging_decay=options.averaging_decay if options.averaging_decay > 0 else None,
        dp_normalization=options.dp_normalization,
        tune_on=public_tuning_arrays(TUNING_SEEDS, data.scaling) if options.tune else None,
        sweep_epsilons=options.sweep_epsilon if options.sweep else None,
        verbose=options.verbose,
    )
    say("\n".join(setup_lines(data, recipes, options.seeds)))
    runs = run_recipes(
        recipes, data.arrays_by_seed, verbose=options.verbose, attack=not options.no_attack
    )
    return report(data, recipes, runs, options.seeds, output)


def main(argv: list[str] | None = None) -> int:
    """`python -m pydp_r.demo`: parse the command line, run the demo; 0 on success."""
    run_demo(parse_args(argv))
    return 0
