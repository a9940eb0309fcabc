"""Data for the heart-rate walkthrough: PPG-DaLiA subjects, a synthetic stand-in, sequences.

``average_and_make_sequences`` is the walkthrough's pre-processing step (window means, then
sliding sequences); ``heart_rate_datasets`` builds its training and test sets for one subject and
``leave_one_subject_out`` for a folder of subjects. For privacy per person, data carry a person:
``synthetic_ppg_population`` and ``load_ppg_dalia_subjects`` give many subjects by id,
``leave_subjects_out`` and ``subject_folds`` split them by person, and ``heart_rate_sequences``
returns each sequence's user id. ``poisson_batches`` samples batches the way the privacy
accountant assumes.
"""

from pydp_r.data.heart_rate import (
    FEATURE_NAMES,
    WINDOW_SIZES,
    heart_rate_arrays,
    heart_rate_datasets,
    heart_rate_sequences,
    leave_one_subject_out,
)
from pydp_r.data.ppg_dalia import (
    ACTIVITY_CODES,
    PPGDaliaFormatError,
    find_subject_files,
    load_ppg_dalia_subject,
    load_ppg_dalia_subjects,
    normalize_ppg_dalia_subject,
)
from pydp_r.data.sampling import (
    distributed_poisson_batches,
    poisson_batch_size_bound,
    poisson_batches,
)
from pydp_r.data.sequences import average_and_make_sequences, average_windows, sliding_sequences
from pydp_r.data.splits import leave_subjects_out, subject_folds
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
    "distributed_poisson_batches",
    "find_subject_files",
    "heart_rate_arrays",
    "heart_rate_datasets",
    "heart_rate_sequences",
    "leave_one_subject_out",
    "leave_subjects_out",
    "load_ppg_dalia_subject",
    "load_ppg_dalia_subjects",
    "normalize_ppg_dalia_subject",
    "poisson_batch_size_bound",
    "poisson_batches",
    "save_ppg_dalia_subject",
    "sliding_sequences",
    "subject_folds",
    "synthetic_ppg_population",
    "synthetic_ppg_subject",
]
