"""The larger privacy-audit runs: how close the empirical lower bounds get, and what they cost.

    python benchmarks/bench_audit.py              # everything (about 15 minutes on 2 CPU cores)
    python benchmarks/bench_audit.py --quick      # smaller runs
    python benchmarks/bench_audit.py --only step  # one part: step, membership or exposure
    python benchmarks/bench_audit.py --json out.json

Step audit: DPSGD (custom-loop gradients and the fit() step) at several noise multipliers and
trial counts; for each, the accountant's one-step epsilon, both lower bounds (any mechanism;
Gaussian mechanism), their ratios to the claim, and trials per second. Membership inference and
canary exposure: the full-size experiments, without and with DP-SGD, and the canary inserted 1
and 4 times.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _step(quick: bool, seed: int) -> list[dict]:
    import pydp_r
    from pydp_r.audit import audit_optimizer_step

    trial_counts = (2_000, 20_000) if quick else (2_000, 20_000, 200_000, 1_000_000)
    noise_multipliers = (1.0,) if quick else (0.5, 1.0, 2.0)
    rows = []
    for noise_multiplier in noise_multipliers:
        for trials in trial_counts:
            for mode in ("gradients", "train_step"):
                # A million trials (four minutes) only where the figures are quoted.
                if trials > 200_000 and (mode == "train_step" or noise_multiplier != 1.0):
                    continue
                optimizer = pydp_r.DPSGD(1.0, noise_multiplier, learning_rate=0.1)
                start = time.perf_counter()
                result = audit_optimizer_step(
                    optimizer, num_trials=trials, delta=1e-5, mode=mode, seed=seed
                )
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "noise_multiplier": noise_multiplier,
                        "trials_per_side": trials,
                        "mode": mode,
                        "claimed_epsilon": result.claimed_epsilon,
                        "dp_lower_bound": result.dp.epsilon_lower_bound,
                        "gdp_lower_bound": result.gdp.epsilon_lower_bound,
                        "dp_ratio": result.dp.epsilon_lower_bound / result.claimed_epsilon,
                        "gdp_ratio": result.gdp.epsilon_lower_bound / result.claimed_epsilon,
                        "passed": result.passed,
                        "seconds": seconds,
                        "trials_per_second": 2 * trials / seconds,
                    }
                )
                row = rows[-1]
                print(
                    f"sigma={noise_multiplier:<4g} trials={trials:>8d} {mode:<10} "
                    f"claim={row['claimed_epsilon']:6.3f} dp={row['dp_lower_bound']:6.3f} "
                    f"({row['dp_ratio']:.2f}) gdp={row['gdp_lower_bound']:6.3f} "
                    f"({row['gdp_ratio']:.2f}) {'PASS' if row['passed'] else 'FAIL'} "
                    f"{seconds:7.1f} s ({row['trials_per_second']:,.0f} trials/s)",
                    flush=True,
                )
    return rows


def _membership(quick: bool, seed: int) -> list[dict]:
    from pydp_r.audit import membership_inference_experiment

    rows = []
    for private in (False, True):
        start = time.perf_counter()
        run = membership_inference_experiment(
            private, num_members=300 if quick else 1000, seed=seed
        )
        print(run.summary(), f"({time.perf_counter() - start:.0f} s)", flush=True)
        rows.append(
            {
                "private": private,
                "auc": run.attack.auc,
                "epsilon_lower_bound": run.attack.epsilon_lower_bound,
                "advantage": run.attack.advantage,
                "accountant_epsilon": run.epsilon,
                "train_accuracy": run.train_accuracy,
                "test_accuracy": run.test_accuracy,
            }
        )
    return rows


def _exposure(quick: bool, seed: int) -> list[dict]:
    from pydp_r.audit import canary_exposure_experiment

    size = {"num_sentences": 800, "epochs": 15} if quick else {}
    rows = []
    for insertions in (1,) if quick else (1, 4):
        for private in (False, True):
            run = canary_exposure_experiment(private, num_insertions=insertions, seed=seed, **size)
            print(run.summary(), flush=True)
            rows.append(
                {
                    "private": private,
                    "num_insertions": insertions,
                    "exposure_bits": run.exposure,
                    "max_exposure_bits": run.max_exposure,
                    "rank": run.rank,
                    "epsilon": run.epsilon,
                    "validation_accuracy": run.validation_accuracy,
                    "seconds": run.wall_seconds,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("step", "membership", "exposure"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    parts = {"step": _step, "membership": _membership, "exposure": _exposure}
    figures = {}
    for name, run in parts.items():
        if args.only in (None, name):
            print(f"== {name} ==", flush=True)
            figures[name] = run(args.quick, args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
