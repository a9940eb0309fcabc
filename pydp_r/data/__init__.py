"""Data for the heart-rate walkthrough: PPG-DaLiA subjects, a synthetic stand-in, sequences.

``average_and_make_sequences`` is the walkthrough's pre-processing step (window means, then
sliding sequences); ``heart_rate_datasets`` builds its training and test sets for one subject and
``leave_one_subject_out`` for a folder of subjects. ``poisson_batches`` samples batches the
way the privacy accountant assumes.
"""

from pydp_r.data.heart_rate import (
    FEATURE_NAMES,
    WINDOW_SIZES,
    find_subject_files,
    heart_rate_arrays,
    heart_rate_datasets,
    leave_one_subject_out,
)
from pydp_r.data.ppg_dalia import (
    ACTIVITY_CODES,
    PPGDaliaFormatError,
    load_ppg_dalia_subject,
    normalize_ppg_dalia_subject,
)
from pydp_r.data.sampling import poisson_batch_size_bound, poisson_batches
from pydp_r.data.sequences import average_and_make_sequences, average_windows, sliding_sequences
from pydp_r.data.synthetic import (
    save_ppg_dalia_subject,
    synthetic_ppg_population,
    synthetic_ppg_subject,
)

__all__ = [
    "ACTIVITY_CODES",
    "FEATURE_NAMES",
    "PPGDaliaFormatError",
    "WINDOW_SIZES",
    "average_and_make_sequences",
    "average_windows",
    "find_subject_files",
    "heart_rate_arrays",
    "heart_rate_datasets",
    "leave_one_subject_out",
    "load_ppg_dalia_subject",
    "normalize_ppg_dalia_subject",
    "poisson_batch_size_bound",
    "poisson_batches",
    "save_ppg_dalia_subject",
    "sliding_sequences",
    "synthetic_ppg_population",
    "synthetic_ppg_subject",
]
