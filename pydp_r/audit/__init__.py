"""Empirical privacy audits: does the trained pipeline keep the promised epsilon?

- `audit_optimizer_step`: one DP step on neighbouring batches, many trials, the best
  threshold test turned into an epsilon lower bound, compared with the accountant's epsilon.
- `canary_exposure_experiment`, `exposure`: memorization of an inserted secret (Secret Sharer).
- `membership_inference`: loss-threshold attack, AUC and implied epsilon lower bound.
- `epsilon_lower_bound`, `clopper_pearson_interval`, `gaussian_epsilon`: the statistics.
- `run_audit_report`: all of it as text (`pydp-r audit`, `python -m pydp_r.audit`).
"""

from pydp_r.audit.bounds import (
    ThresholdAudit,
    accountant_epsilon_one_step,
    clopper_pearson_interval,
    epsilon_from_error_rates,
    epsilon_lower_bound,
    gaussian_delta,
    gaussian_epsilon,
    gaussian_false_negative_rate,
    gaussian_mu_from_error_rates,
)
from pydp_r.audit.canary import (
    ExposureRun,
    canary_exposure_experiment,
    exposure,
    exposure_from_rank,
    make_canary_corpus,
    secret_log_perplexities,
)
from pydp_r.audit.membership import (
    MembershipInference,
    MembershipRun,
    membership_inference,
    membership_inference_experiment,
    per_example_losses,
    roc_auc,
)
from pydp_r.audit.report import run_audit_report
from pydp_r.audit.step import StepAudit, audit_optimizer_step

__all__ = [
    "ExposureRun",
    "MembershipInference",
    "MembershipRun",
    "StepAudit",
    "ThresholdAudit",
    "accountant_epsilon_one_step",
    "audit_optimizer_step",
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
