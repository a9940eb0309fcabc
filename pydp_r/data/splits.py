"""Splits by person: whole subjects go to training or to testing, never both.

With several sequences per person, a split of sequences puts some of a person's data on both
sides, so test error flatters the model and a membership test learns nothing about people. These
split subject ids (PPG-DaLiA's ``"S1"`` ... ``"S15"``, a synthetic population's ``"P0-0042"``);
``heart_rate_sequences`` then builds each side from its subjects.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pydp_r._checks import check_count
from pydp_r.data.ppg_dalia import check_subject_ids

__all__ = ["leave_subjects_out", "subject_folds"]


def leave_subjects_out(
    subject_ids: Iterable[str], test_subjects: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Splits subject ids into training and test ids, ``test_subjects`` held out.

    Args:
        subject_ids: All ids, distinct non-empty strings, or a dict keyed by them (what
            ``load_ppg_dalia_subjects`` returns).
        test_subjects: Ids to hold out, distinct, each in ``subject_ids``, at least one and
            fewer than all.

    Returns:
        ``(train_ids, test_ids)``, each in the order of ``subject_ids``.

    Raises:
        ValueError: If an argument is outside the range above (the message names it).
    """
    ids = check_subject_ids(subject_ids)
    held_out = check_subject_ids(test_subjects, "test_subjects")
    unknown = [name for name in held_out if name not in ids]
    if unknown:
        raise ValueError(
            f"test_subjects must be among subject_ids {ids}; received {unknown} that are not."
        )
    if len(held_out) == len(ids):
        raise ValueError(
            f"test_subjects must leave at least one subject for training; received all "
            f"{len(ids)}: {held_out}."
        )
    return [name for name in ids if name not in held_out], [
        name for name in ids if name in held_out
    ]


def subject_folds(
    subject_ids: Iterable[str], n_folds: int, seed: int | None = None
) -> list[tuple[list[str], list[str]]]:
    """K-fold cross-validation by subject: every subject is tested in exactly one fold.

    Args:
        subject_ids: All ids, distinct non-empty strings, or a dict keyed by them.
        n_folds: Number of folds, integer in [2, number of subjects]; ``n_folds`` equal to
            the number of subjects is leave-one-subject-out.
        seed: None (default) for folds of consecutive subjects in the given order, or an
            integer >= 0 to assign subjects to folds at random, reproducibly.

    Returns:
        ``n_folds`` pairs ``(train_ids, test_ids)``, each list in the order of
        ``subject_ids``; test folds differ in size by at most one subject.

    Raises:
        ValueError: If an argument is outside the range above (the message names it).
    """
    ids = check_subject_ids(subject_ids)
    n_folds = check_count("n_folds", n_folds, minimum=2)
    if n_folds > len(ids):
        raise ValueError(
            f"n_folds must be an integer in [2, {len(ids)}] for {len(ids)} subjects; "
            f"received {n_folds!r}."
        )
    order = np.arange(len(ids))
    if seed is not None:
        seed = check_count("seed", seed, minimum=0)
        order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = np.empty(len(ids), dtype=int)
    for fold, members in enumerate(np.array_split(order, n_folds)):
        fold_of[members] = fold
    return [
        (
            [name for name, home in zip(ids, fold_of, strict=True) if home != fold],
            [name for name, home in zip(ids, fold_of, strict=True) if home == fold],
        )
        for fold in range(n_folds)
    ]
