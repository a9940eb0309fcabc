"""Splits by person: every subject on one side only, folds that cover everyone once."""

import pytest

from pydp_r.data import leave_subjects_out, subject_folds

IDS = [f"S{number}" for number in range(1, 16)]


def test_leave_subjects_out_holds_out_exactly_the_test_subjects():
    train, test = leave_subjects_out(IDS, test_subjects=["S10", "S2"])
    assert test == ["S2", "S10"]  # in the order of subject_ids
    assert train == [name for name in IDS if name not in ("S2", "S10")]
    # A dict keyed by id (what load_ppg_dalia_subjects returns) is its ids.
    assert leave_subjects_out({"a": 1, "b": 2}, ["b"]) == (["a"], ["b"])


@pytest.mark.parametrize(
    "test_subjects, message",
    [
        (["S16"], r"test_subjects must be among subject_ids .*\['S16'\]"),
        (IDS, "at least one subject for training"),
        ([], "test_subjects must be a non-empty list"),
        ("S1", "test_subjects must be a non-empty list"),
        (["S1", "S1"], "more than once"),
    ],
)
def test_leave_subjects_out_rejects_bad_test_subjects(test_subjects, message):
    with pytest.raises(ValueError, match=message):
        leave_subjects_out(IDS, test_subjects)


def test_leave_subjects_out_rejects_bad_ids():
    with pytest.raises(ValueError, match="subject_ids .*more than once"):
        leave_subjects_out(["S1", "S2", "S1"], ["S2"])
    with pytest.raises(ValueError, match="subject_ids must be"):
        leave_subjects_out(["S1", ""], ["S1"])


@pytest.mark.parametrize("seed", [None, 0, 7])
@pytest.mark.parametrize("n_folds", [2, 4, 15])
def test_folds_test_every_subject_once_and_never_train_on_it(n_folds, seed):
    folds = subject_folds(IDS, n_folds, seed=seed)
    assert len(folds) == n_folds
    tested = [name for _, test in folds for name in test]
    assert sorted(tested) == sorted(IDS)  # each subject tested in exactly one fold
    for train, test in folds:
        assert not set(train) & set(test)
        assert sorted(train + test) == sorted(IDS)
        assert train == [name for name in IDS if name in train]  # given order kept
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1


def test_folds_are_consecutive_without_seed_and_reproducible_with_one():
    assert [test for _, test in subject_folds(IDS[:6], 3)] == [
        ["S1", "S2"],
        ["S3", "S4"],
        ["S5", "S6"],
    ]
    assert subject_folds(IDS, 5, seed=3) == subject_folds(IDS, 5, seed=3)
    assert subject_folds(IDS, 5, seed=3) != subject_folds(IDS, 5, seed=4)


@pytest.mark.parametrize(
    "n_folds, seed, name",
    [(1, None, "n_folds"), (16, None, "n_folds"), (2.5, None, "n_folds"), (3, -1, "seed")],
)
def test_folds_reject_bad_arguments(n_folds, seed, name):
    with pytest.raises(ValueError, match=name):
        subject_folds(IDS, n_folds, seed=seed)
