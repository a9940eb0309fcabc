"""Heart-rate training and test data: one subject, leave-one-subject-out, user ids per sequence."""

import copy

import numpy as np
import pytest
import tensorflow as tf

from pydp_r.data import (
    find_subject_files,
    heart_rate_arrays,
    heart_rate_datasets,
    heart_rate_sequences,
    leave_one_subject_out,
    leave_subjects_out,
    save_ppg_dalia_subject,
    synthetic_ppg_population,
    synthetic_ppg_subject,
)

WINDOWS = {"ACC": 64, "BVP": 128, "EDA": 8, "TEMP": 8}


@pytest.fixture(scope="module")
def s1_sized():
    return synthetic_ppg_subject(n_labels=4603, seed=1, include_chest=False)


@pytest.fixture(scope="module")
def small():
    return synthetic_ppg_subject(n_labels=120, seed=2, include_chest=False)


def _step_mean(subject, name, step, column=0):
    """Mean of one wrist signal over 2 s step ``step``, computed directly from the samples."""
    window = WINDOWS[name]
    values = subject["signal"]["wrist"][name][step * window : (step + 1) * window, column]
    return values.mean()


@tf.autograph.experimental.do_not_convert
def _walkthrough_part(data, window_size_avg, num_timesteps):
    """The walkthrough's average_and_make_sequences in tf.data (see test_sequences.py)."""
    return (
        tf.data.Dataset.from_tensor_slices(tf.cast(data, tf.float32))
        .window(window_size_avg)
        .flat_map(lambda window: window.batch(window_size_avg, drop_remainder=True))
        .map(lambda batch: tf.reduce_mean(batch, axis=0))
        .window(num_timesteps, shift=1)
        .flat_map(lambda steps: steps.batch(num_timesteps, drop_remainder=True))
    )


def test_sequence_counts_of_subject_s1(s1_sized):
    x_train, y_train, x_test, y_test = heart_rate_arrays(s1_sized)
    assert x_train.shape == (3989, 12, 6) and y_train.shape == (3989, 1)
    assert x_test.shape == (592, 12, 6) and y_test.shape == (592, 1)
    assert x_train.dtype == y_train.dtype == np.float32


def test_features_labels_and_split(s1_sized):
    x_train, y_train, x_test, y_test = heart_rate_arrays(s1_sized, train_max=4000, num_timesteps=12)
    label = s1_sized["label"]
    # Sequence i covers steps [i, i + 12) and is labelled with step i + 11.
    for i in (0, 1234, 3988):
        np.testing.assert_allclose(y_train[i, 0], label[i + 11], rtol=1e-6)
        for j in (0, 11):
            step = i + j
            expected = [_step_mean(s1_sized, "ACC", step, c) for c in range(3)]
            expected += [_step_mean(s1_sized, name, step) for name in ("BVP", "EDA", "TEMP")]
            np.testing.assert_allclose(x_train[i, j], expected, rtol=1e-5, atol=1e-4)
    # The last training sequence ends at step 3999; the first test sequence starts at 4000.
    np.testing.assert_allclose(x_test[0, 0, 3], _step_mean(s1_sized, "BVP", 4000), rtol=1e-5)
    np.testing.assert_allclose(x_train[-1, -1, 3], _step_mean(s1_sized, "BVP", 3999), rtol=1e-5)
    np.testing.assert_allclose(y_test[0, 0], label[4011], rtol=1e-6)
    np.testing.assert_allclose(y_test[-1, 0], label[-1], rtol=1e-6)


def test_matches_the_walkthrough_assembly(small):
    train_max, steps = 90, 5
    wrist = small["signal"]["wrist"]
    n_labels = small["label"].size
    train_parts, test_parts = [], []
    for name, window in WINDOWS.items():
        values = wrist[name][: n_labels * window]
        train_parts.append(_walkthrough_part(values[: train_max * window], window, steps))
        test_parts.append(_walkthrough_part(values[train_max * window :], window, steps))

    def zipped(parts):
        dataset = tf.data.Dataset.zip(tuple(parts)).map(lambda *xs: tf.concat(xs, axis=1))
        return np.stack(list(dataset.as_numpy_iterator()))

    x_train, y_train, x_test, y_test = heart_rate_arrays(small, train_max, steps)
    np.testing.assert_allclose(x_train, zipped(train_parts), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(x_test, zipped(test_parts), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y_train[:, 0], small["label"][steps - 1 : train_max], rtol=1e-6)
    np.testing.assert_allclose(y_test[:, 0], small["label"][train_max + steps - 1 :], rtol=1e-6)


def test_standardization_uses_training_statistics_only(small):
    raw = heart_rate_arrays(small, train_max=80, num_timesteps=4)
    scaled = heart_rate_arrays(small, train_max=80, num_timesteps=4, standardize=True)
    # Training steps are rows 0..79: the first step of every sequence plus the last sequence.
    train_steps = np.concatenate([raw[0][:, 0], raw[0][-1, 1:]])
    mean, std = train_steps.mean(axis=0), train_steps.std(axis=0)
    np.testing.assert_allclose(scaled[0], (raw[0] - mean) / std, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scaled[2], (raw[2] - mean) / std, rtol=1e-3, atol=1e-3)
    scaled_steps = np.concatenate([scaled[0][:, 0], scaled[0][-1, 1:]])
    np.testing.assert_allclose(scaled_steps.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(scaled_steps.std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(scaled[1], raw[1])  # labels untouched


def test_datasets_batches_order_and_shuffling(small, tmp_path):
    x_train, y_train, x_test, y_test = heart_rate_arrays(small, train_max=100, num_timesteps=6)
    ds_train, ds_test = heart_rate_datasets(
        small, train_max=100, num_timesteps=6, batch_size=8, seed=3
    )
    train_batches = list(ds_train.as_numpy_iterator())
    assert all(x.shape[1:] == (6, 6) and y.shape[1:] == (1,) for x, y in train_batches)
    assert train_batches[0][0].dtype == np.float32 and train_batches[0][1].dtype == np.float32
    shuffled_y = np.concatenate([y for _, y in train_batches])
    np.testing.assert_array_equal(np.sort(shuffled_y[:, 0]), np.sort(y_train[:, 0]))
    assert not np.array_equal(shuffled_y, y_train)
    # Same seed, same first epoch; a second epoch reshuffles.
    again, _ = heart_rate_datasets(small, train_max=100, num_timesteps=6, batch_size=8, seed=3)
    np.testing.assert_array_equal(next(iter(again))[1].numpy(), train_batches[0][1])
    second_epoch = np.concatenate([y for _, y in ds_train.as_numpy_iterator()])
    assert not np.array_equal(second_epoch, shuffled_y)
    # The test set is in time order, all of it; a path works like the dict.
    path = tmp_path / "S2.pkl"
    save_ppg_dalia_subject(small, path)
    _, ds_test_from_file = heart_rate_datasets(path, train_max=100, num_timesteps=6, batch_size=8)
    for dataset in (ds_test, ds_test_from_file):
        x = np.concatenate([x for x, _ in dataset.as_numpy_iterator()])
        np.testing.assert_array_equal(x, x_test)


def test_unshuffled_and_drop_remainder(small):
    x_train, _, _, _ = heart_rate_arrays(small, train_max=100, num_timesteps=6)  # 95 sequences
    ordered, _ = heart_rate_datasets(small, train_max=100, num_timesteps=6, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in ordered]), x_train)
    dropped, ds_test = heart_rate_datasets(
        small, train_max=100, num_timesteps=6, batch_size=16, drop_remainder=True
    )
    sizes = [x.shape[0] for x, _ in dropped]
    assert sizes == [16] * 5  # 95 // 16 full batches
    assert sum(x.shape[0] for x, _ in ds_test) == 120 - 100 - 6 + 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"train_max": 11}, "train_max"),  # fewer than num_timesteps labels for training
        ({"train_max": 110}, "train_max"),  # 120 - 110 < 12 labels for testing
        ({"train_max": 0}, "train_max"),
        ({"num_timesteps": 0}, "num_timesteps"),
        ({"num_timesteps": 2.5}, "num_timesteps"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_rejects_bad_arguments(small, kwargs, name):
    arguments = {"train_max": 100, **kwargs}
    with pytest.raises(ValueError, match=name):
        heart_rate_datasets(small, **arguments)


def test_bounds_of_train_max_are_inclusive(small):
    x_train, _, x_test, _ = heart_rate_arrays(small, train_max=12, num_timesteps=12)
    assert x_train.shape[0] == 1 and x_test.shape[0] == 120 - 12 - 11
    x_train, _, x_test, _ = heart_rate_arrays(small, train_max=108, num_timesteps=12)
    assert x_test.shape[0] == 1


def test_rejects_bad_subjects(small, tmp_path):
    with pytest.raises(ValueError, match="subject must be"):
        heart_rate_arrays(42, train_max=100)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        heart_rate_arrays(tmp_path / "missing.pkl", train_max=100)
    short = copy.deepcopy(small)
    short["signal"]["wrist"]["BVP"] = short["signal"]["wrist"]["BVP"][:15359]
    with pytest.raises(ValueError, match=r"signal/wrist/BVP.*fewer than the 15360"):
        heart_rate_arrays(short, train_max=100)
    non_finite = copy.deepcopy(small)
    non_finite["signal"]["wrist"]["EDA"][50, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        heart_rate_arrays(non_finite, train_max=100)
    bad_label = copy.deepcopy(small)
    bad_label["label"][3] = np.inf
    with pytest.raises(ValueError, match="label.*finite"):
        heart_rate_arrays(bad_label, train_max=100)


@pytest.fixture(scope="module")
def subject_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppg_dalia")
    subjects = {}
    for number, n_labels in ((1, 40), (2, 30), (10, 50)):
        name = f"S{number}"
        subjects[name] = synthetic_ppg_subject(n_labels=n_labels, seed=number, name=name)
        save_ppg_dalia_subject(subjects[name], folder / f"{name}.pkl")
    return folder, subjects


def _all_sequences(subject, num_timesteps):
    """Every sequence of one subject and its label, from sample means computed here."""
    steps = np.array(
        [
            [_step_mean(subject, "ACC", step, column) for column in range(3)]
            + [_step_mean(subject, name, step) for name in ("BVP", "EDA", "TEMP")]
            for step in range(subject["label"].size)
        ],
        dtype=np.float32,
    )
    count = steps.shape[0] - num_timesteps + 1
    x = np.stack([steps[start : start + num_timesteps] for start in range(count)])
    y = subject["label"][num_timesteps - 1 :].astype(np.float32)[:, None]
    return x, y


def test_find_subject_files_sorts_numerically(subject_folder, tmp_path):
    folder, _ = subject_folder
    assert list(find_subject_files(folder)) == ["S1", "S2", "S10"]
    nested = tmp_path / "PPG_FieldStudy" / "S4"
    nested.mkdir(parents=True)
    (nested / "S4.pkl").write_bytes(b"")
    assert list(find_subject_files(tmp_path / "PPG_FieldStudy")) == ["S4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no subject files"):
        find_subject_files(empty)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_subject_files(tmp_path / "nope")


def test_leave_one_subject_out_keeps_subjects_apart(subject_folder):
    folder, subjects = subject_folder
    ds_train, ds_test = leave_one_subject_out(folder, "S2", num_timesteps=8, batch_size=7, seed=0)
    x_test = np.concatenate([x for x, _ in ds_test.as_numpy_iterator()])
    y_test = np.concatenate([y for _, y in ds_test.as_numpy_iterator()])
    expected_x, expected_y = _all_sequences(subjects["S2"], 8)
    np.testing.assert_allclose(x_test, expected_x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y_test, expected_y, rtol=1e-6)

    batches = list(ds_train.as_numpy_iterator())
    x_train = np.concatenate([x for x, _ in batches])
    y_train = np.concatenate([y for _, y in batches])
    assert x_train.shape == (33 + 43, 8, 6)
    # Every training sequence is one of a single training subject's own sequences, with its
    # label: none crosses a subject boundary, none comes from the test subject, none repeats.
    own_x = np.concatenate([_all_sequences(subjects[name], 8)[0] for name in ("S1", "S10")])
    own_y = np.concatenate([_all_sequences(subjects[name], 8)[1] for name in ("S1", "S10")])
    distance = np.abs(x_train[:, None] - own_x[None]).max(axis=(2, 3))
    match = distance.argmin(axis=1)
    assert np.all(distance[np.arange(len(match)), match] < 1e-3)
    assert sorted(match) == list(range(len(own_x)))
    np.testing.assert_allclose(y_train, own_y[match], rtol=1e-6)
    assert not np.array_equal(match, np.arange(len(match)))  # shuffled across subjects


def test_leave_one_subject_out_standardizes_with_training_subjects(subject_folder):
    folder, subjects = subject_folder
    _, ds_test = leave_one_subject_out(folder, "S1", num_timesteps=5, standardize=True)
    steps = []
    for name in ("S2", "S10"):
        x, _ = _all_sequences(subjects[name], 5)
        steps.append(np.concatenate([x[:, 0], x[-1, 1:]]))
    steps = np.concatenate(steps).astype(np.float64)
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    raw_test, _ = _all_sequences(subjects["S1"], 5)
    x_test = np.concatenate([x for x, _ in ds_test.as_numpy_iterator()])
    np.testing.assert_allclose(x_test, (raw_test - mean) / std, rtol=1e-3, atol=1e-3)


def test_leave_one_subject_out_rejects_bad_arguments(subject_folder, tmp_path):
    folder, subjects = subject_folder
    with pytest.raises(ValueError, match=r"test_subject must be one of \['S1', 'S2', 'S10'\]"):
        leave_one_subject_out(folder, "S3")
    with pytest.raises(ValueError, match="subjects_in_memory"):
        leave_one_subject_out(folder, "S1", subjects_in_memory=0)
    with pytest.raises(ValueError, match="batch_size"):
        leave_one_subject_out(folder, "S1", batch_size=-2)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    save_ppg_dalia_subject(subjects["S1"], lonely / "S1.pkl")
    with pytest.raises(ValueError, match="at least one subject besides"):
        leave_one_subject_out(lonely, "S1")
    with pytest.raises(FileNotFoundError):
        leave_one_subject_out(tmp_path / "absent", "S1")


# User ids: every sequence says whose it is.


def test_arrays_carry_the_subject_as_user_id_when_asked(small):
    plain = heart_rate_arrays(small, train_max=100)
    with_ids = heart_rate_arrays(small, train_max=100, with_user_ids=True)
    assert len(plain) == 4 and len(with_ids) == 6
    for mine, theirs in zip(plain, with_ids[:4], strict=True):
        np.testing.assert_array_equal(mine, theirs)
    user_ids_train, user_ids_test = with_ids[4:]
    assert user_ids_train.shape == (len(with_ids[1]),)
    assert user_ids_test.shape == (len(with_ids[3]),)
    assert set(user_ids_train) == set(user_ids_test) == {small["subject"]}


def test_sequences_of_several_subjects_carry_their_user_ids(subject_folder):
    folder, subjects = subject_folder
    x, y, user_ids = heart_rate_sequences(subjects, num_timesteps=5)
    # Each subject is cut on its own: n_labels - 4 sequences each, in the given order.
    counts = {name: subject["label"].size - 4 for name, subject in subjects.items()}
    assert x.shape == (sum(counts.values()), 5, 6) and y.shape == (len(x), 1)
    assert list(dict.fromkeys(user_ids)) == list(subjects)
    start = 0
    for name, subject in subjects.items():
        rows = slice(start, start + counts[name])
        assert set(user_ids[rows]) == {name}
        expected_x, expected_y = _all_sequences(subject, 5)
        np.testing.assert_allclose(x[rows], expected_x, rtol=1e-6)
        np.testing.assert_array_equal(y[rows], expected_y)
        start += counts[name]
    # A list of subjects (a synthetic population) is keyed by each one's subject entry; paths
    # work as well as dicts.
    paths = [str(folder / f"{name}.pkl") for name in subjects]
    _, y_paths, ids_paths = heart_rate_sequences(paths, num_timesteps=5)
    np.testing.assert_array_equal(y_paths, y)
    np.testing.assert_array_equal(ids_paths, user_ids)


def test_sequences_of_a_population_split_by_person():
    people = synthetic_ppg_population(6, seed=1, n_labels_range=(40, 60))
    train_ids, test_ids = leave_subjects_out([person["subject"] for person in people], ["P1-2"])
    by_id = {person["subject"]: person for person in people}
    _, _, train_users = heart_rate_sequences({name: by_id[name] for name in train_ids})
    _, y_test, test_users = heart_rate_sequences([by_id[name] for name in test_ids])
    assert set(train_users) == set(train_ids) and set(test_users) == {"P1-2"}
    assert len(y_test) == by_id["P1-2"]["label"].size - 11


def test_sequences_reject_bad_subjects(subject_folder):
    _, subjects = subject_folder
    with pytest.raises(ValueError, match="subjects must be a dict"):
        heart_rate_sequences(42)
    with pytest.raises(ValueError, match="subjects must be a dict"):
        heart_rate_sequences("S1.pkl")
    with pytest.raises(ValueError, match=r"more than once"):
        heart_rate_sequences([subjects["S1"], subjects["S1"]])
    with pytest.raises(ValueError, match="non-empty list"):
        heart_rate_sequences([])
    with pytest.raises(ValueError, match=r"'S2' has 30, got 31"):
        heart_rate_sequences(subjects, num_timesteps=31)
