"""TF Privacy's `privacy.analysis` package, on pydp_r: DP-SGD privacy statements and epsilons."""

from pydp_r.tensorflow_privacy._lazy import package_getattr

__getattr__ = package_getattr(
    __name__,
    (
        "compute_dp_sgd_privacy",
        "compute_dp_sgd_privacy_lib",
        "compute_noise_from_budget",
        "compute_noise_from_budget_lib",
    ),
    ("gdp_accountant", "rdp_accountant", "tensor_buffer", "tree_aggregation_accountant"),
)
