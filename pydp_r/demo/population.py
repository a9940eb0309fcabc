"""The per-wearer demo's data: a synthetic population split by person.

`python -m pydp_r.demo --privacy-unit user` trains on many wearers and tests on wearers held
out of training, so its test error is the error on a new person and its membership test asks
about people. Each seed is one population (`pydp_r.data.synthetic_ppg_population`, wrist signals
only); its last wearers are held out for testing, the ones before them for validation (the
validation curves and the tuning read those, never the test wearers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pydp_r import data as wearable_data
from pydp_r._checks import check_count

#: Recording length of each wearer, in heart-rate labels (one per 2 s): 2 to 10 minutes. Short
#: recordings keep a population of thousands in memory (about 43 KB of sequences per wearer)
#: and fast to simulate (about 100 wearers per second on one core).
N_LABELS_RANGE = (60, 300)
#: Wearers per population: trained on, validated on, tested on (held out of training).
TRAINING_USERS = 2000
VALIDATION_USERS = 200
TEST_USERS = 400


@dataclass(frozen=True)
class PopulationArrays:
    """One population's sequences, split by wearer; features scaled with public statistics.

    Attributes:
        x_fit, y_fit, user_ids_fit: Training wearers' sequences, heart rates (bpm, (n, 1)) and
            the wearer id of each sequence.
        x_val, y_val: Validation wearers' sequences and heart rates.
        x_test, y_test, user_ids_test: Held-out wearers' sequences, heart rates and ids.
        source: One line saying where the data came from.
    """

    x_fit: np.ndarray
    y_fit: np.ndarray
    user_ids_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    user_ids_test: np.ndarray
    source: str

    @property
    def n_users(self) -> int:
        """Training wearers: the privacy accounting's n."""
        return len(np.unique(self.user_ids_fit))

    @property
    def baseline_mae_bpm(self) -> float:
        """Test MAE of always predicting the training wearers' mean heart rate."""
        return float(np.mean(np.abs(self.y_test - np.mean(self.y_fit))))


def population_arrays(
    seed: int,
    scaling: tuple[np.ndarray, np.ndarray] | None,
    training_users: int = TRAINING_USERS,
    validation_users: int = VALIDATION_USERS,
    test_users: int = TEST_USERS,
    n_labels_range: tuple[int, int] = N_LABELS_RANGE,
) -> PopulationArrays:
    """A synthetic population of `seed`, its sequences split by wearer.

    Args:
        seed: Seed of the population, integer >= 0 (its wearers are "P<seed>-<i>").
        scaling: Per-feature (mean, sd) to scale with (public statistics), or None.
        training_users, validation_users, test_users: Wearers on each side, integers >= 1.
        n_labels_range: (shortest, longest) recording in labels, as in
            `synthetic_ppg_population`; the shortest must be >= 12 (one sequence).

    Returns:
        The `PopulationArrays`; the last `test_users` wearers are held out for testing, the
        `validation_users` before them for validation.

    Raises:
        ValueError: For an argument outside its range.
    """
    training_users = check_count("training_users", training_users)
    validation_users = check_count("validation_users", validation_users)
    test_users = check_count("test_users", test_users)
    total = training_users + validation_users + test_users
    people = wearable_data.synthetic_ppg_population(total, seed, n_labels_range=n_labels_range)
    x, y, user_ids = wearable_data.heart_rate_sequences(people)
    del people  # the raw signals are 10 times the sequences
    ids = np.unique(user_ids)  # "P<seed>-<i>" with i zero-padded: person order
    rest, test_ids = wearable_data.leave_subjects_out(ids, ids[-test_users:])
    fit_ids, val_ids = wearable_data.leave_subjects_out(rest, rest[-validation_users:])
    if scaling is not None:
        mean, sd = scaling
        x = ((x - mean) / sd).astype(np.float32)
    fit, val, test = (np.isin(user_ids, side) for side in (fit_ids, val_ids, test_ids))
    return PopulationArrays(
        x[fit], y[fit], user_ids[fit], x[val], y[val], x[test], y[test], user_ids[test],
        f"synthetic population (seed {seed}): {training_users} training, {validation_users} "
        f"validation and {test_users} held-out wearers, {n_labels_range[0] * 2 // 60}-"
        f"{n_labels_range[1] * 2 // 60} min each",
    )  # fmt: skip
