"""Empirical privacy audits: does the trained pipeline keep the promised epsilon?

- `audit_optimizer_step`: one DP step on neighbouring batches, many trials, the best
  threshold test turned into an epsilon lower bound, compared with the accountant's epsilon.
- `audit_user_level_step`: the same with one whole user (many examples) removed, for the
  user-level step, against the per-user claim.
- `canary_exposure_experiment`, `exposure`: memorization of an inserted secret (Secret Sharer).
- `membership_inference`: loss-threshold attack, AUC and implied epsilon lower bound.
- `epsilon_lower_bound`, `clopper_pearson_interval`, `gaussian_epsilon`: the statistics.
- `run_audit_report`: all of it as text (`pydp-r audit`, `python -m pydp_r.audit`).
"""

import importlib
from typing import Any

# Public name -> module; imported on first use (PEP 562), so `pydp-r --help` and the audit's
# argument parsing do not load TensorFlow.
_LAZY_NAMES = {
    "ThresholdAudit": "pydp_r.audit.bounds",
    "accountant_epsilon_one_step": "pydp_r.audit.bounds",
    "clopper_pearson_interval": "pydp_r.audit.bounds",
    "epsilon_from_error_rates": "pydp_r.audit.bounds",
    "epsilon_lower_bound": "pydp_r.audit.bounds",
    "gaussian_delta": "pydp_r.audit.bounds",
    "gaussian_epsilon": "pydp_r.audit.bounds",
    "gaussian_false_negative_rate": "pydp_r.audit.bounds",
    "gaussian_mu_from_error_rates": "pydp_r.audit.bounds",
    "ExposureRun": "pydp_r.audit.canary",
    "canary_exposure_experiment": "pydp_r.audit.canary",
    "exposure": "pydp_r.audit.canary",
    "exposure_from_rank": "pydp_r.audit.canary",
    "make_canary_corpus": "pydp_r.audit.canary",
    "secret_log_perplexities": "pydp_r.audit.canary",
    "MembershipInference": "pydp_r.audit.membership",
    "MembershipRun": "pydp_r.audit.membership",
    "membership_inference": "pydp_r.audit.membership",
    "membership_inference_experiment": "pydp_r.audit.membership",
    "per_example_losses": "pydp_r.audit.membership",
    "roc_auc": "pydp_r.audit.membership",
    "run_audit_report": "pydp_r.audit.report",
    "StepAudit": "pydp_r.audit.step",
    "audit_optimizer_step": "pydp_r.audit.step",
    "audit_user_level_step": "pydp_r.audit.step",
}

__all__ = [
    "ExposureRun",
    "MembershipInference",
    "MembershipRun",
    "StepAudit",
    "ThresholdAudit",
    "accountant_epsilon_one_step",
    "audit_optimizer_step",
    "audit_user_level_step",
    "canary_exposure_experiment",
    "clopper_pearson_interval",
    "epsilon_from_error_rates",
    "epsilon_lower_bound",
    "exposure",
    "exposure_from_rank",
    "gaussian_delta",
    "gaussian_epsilon",
    "gaussian_false_negative_rate",
    "gaussian_mu_from_error_rates",
    "make_canary_corpus",
    "membership_inference",
    "membership_inference_experiment",
    "per_example_losses",
    "roc_auc",
    "run_audit_report",
    "secret_log_perplexities",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module 'pydp_r.audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value
    return value
