"""TF Privacy's `privacy.analysis.compute_noise_from_budget` module on pydp_r.

Offers `compute_noise` (TF Privacy's calibration, the same number). For the command line use
`pydp-r noise --n ... --batch-size ... --target-epsilon ... --epochs ... --delta ...`
(pydp_r's own calibration, `pydp_r.compute_noise_multiplier`).
"""

from pydp_r.tensorflow_privacy.privacy.analysis.compute_noise_from_budget_lib import compute_noise

__all__ = ["compute_noise"]
