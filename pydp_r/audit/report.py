"""The audit report behind `pydp-r audit` and `python -m pydp_r.audit`: all audits, in figures."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydp_r._checks import (
    MAX_NOISE_MULTIPLIER,
    check_count,
    check_open_probability,
    check_positive,
    check_real,
)

AUDITS = ("step", "membership", "exposure")


def _check_audits(audits: Sequence[str]) -> tuple[str, ...]:
    names = (audits,) if isinstance(audits, str) else tuple(audits)
    unknown = [name for name in names if name not in AUDITS]
    if not names or unknown:
        raise ValueError(f"audits must be a non-empty selection of {AUDITS}; received {audits!r}.")
    return names


def run_audit_report(
    audits: Sequence[str] = AUDITS,
    noise_multiplier: float = 1.0,
    l2_norm_clip: float = 1.0,
    num_trials: int = 5000,
    delta: float = 1e-5,
    quick: bool = False,
    seed: int = 0,
) -> str:
    """Run the chosen audits on pydp_r's own optimizers and return the figures as text.

    - "step": `audit_optimizer_step` on `DPSGD` (custom-loop gradients and the `fit()` step),
      `DPAdam` (`fit()` step) and `DPSGD` with microbatches: the accountant's one-step
      epsilon, the empirical lower bounds and their ratio to it.
    - "membership": `membership_inference_experiment` without and with DP-SGD.
    - "exposure": `canary_exposure_experiment` without and with DP-SGD, one insertion.

    Args:
        audits: Which audits to run, a non-empty subset of ("step", "membership", "exposure").
        noise_multiplier: Noise multiplier of the audited step, in (0, 1e4].
        l2_norm_clip: Clipping bound of the audited step, a finite number > 0.
        num_trials: Step-audit trials per side, integer >= 8.
        delta: Delta of every epsilon, in (0, 1).
        quick: True runs smaller versions (fewer trials, a shorter corpus, fewer epochs):
            a smoke test of the pipeline, with looser bounds, not the reference figures.
        seed: Seeds every audit, integer >= 0.

    Returns:
        The report, one section per audit, ending with a newline.

    Raises:
        ValueError: For an argument outside its range, before TensorFlow is imported.
    """
    # Every argument is checked before the audits' modules load TensorFlow (seconds).
    names = _check_audits(audits)
    noise_multiplier = check_real(
        "noise_multiplier",
        noise_multiplier,
        f"a number in (0, {MAX_NOISE_MULTIPLIER:g}]",
        lambda x: 0 < x <= MAX_NOISE_MULTIPLIER,
    )
    l2_norm_clip = check_positive("l2_norm_clip", l2_norm_clip)
    num_trials = check_count("num_trials", num_trials, 8)
    delta = check_open_probability("delta", delta)
    if not isinstance(quick, bool):
        raise ValueError(f"quick must be True or False; received {quick!r}.")
    seed = check_count("seed", seed, 0)

    from pydp_r.audit import canary, membership, step
    from pydp_r.optimizers import DPSGD, DPAdam

    sections = []
    if "step" in names:
        trials = min(num_trials, 1000) if quick else num_trials
        start = time.perf_counter()
        configurations = [
            ("DPSGD, compute_dp_gradients", DPSGD, None, "gradients"),
            ("DPSGD, fit() training step", DPSGD, None, "train_step"),
            ("DPAdam, fit() training step", DPAdam, None, "train_step"),
            ("DPSGD, 4 microbatches of 2", DPSGD, 4, "gradients"),
        ]
        lines = [
            "Step audit: one DP step on neighbouring batches (with / without a canary whose "
            "gradient norm is 100 x l2_norm_clip), best threshold test on the update's "
            "projection on the canary gradient; lower bounds hold with 95% confidence."
        ]
        for label, optimizer_class, microbatches, mode in configurations:
            optimizer = optimizer_class(
                l2_norm_clip, noise_multiplier, num_microbatches=microbatches, learning_rate=0.1
            )
            result = step.audit_optimizer_step(
                optimizer, num_trials=trials, delta=delta, mode=mode, seed=seed
            )
            lines.append(f"[{label}]\n" + result.summary())
        lines.append(f"({time.perf_counter() - start:.1f} s)")
        sections.append("\n".join(lines))
    if "membership" in names:
        size = {"num_members": 300} if quick else {}
        lines = [
            "Membership inference (loss threshold) on a classifier with 20% flipped labels, "
            "members and non-members from one distribution:"
        ]
        for private in (False, True):
            run = membership.membership_inference_experiment(
                private, delta=delta, seed=seed, **size
            )
            lines.append(run.summary())
        sections.append("\n".join(lines))
    if "exposure" in names:
        size = {"num_sentences": 800, "epochs": 15} if quick else {}
        lines = [
            "Canary exposure (Secret Sharer): 'my secret is NNNNN' inserted once into a "
            "generated corpus, character model trained without and with DP-SGD; exposure "
            "from the exact rank among all 10^5 candidates:"
        ]
        for private in (False, True):
            run = canary.canary_exposure_experiment(
                private, num_insertions=1, delta=delta, seed=seed, **size
            )
            lines.append(run.summary())
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"
