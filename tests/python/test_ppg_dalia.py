"""Loading PPG-DaLiA subject pickles: round trips, Python 2 files, and every malformed input."""

import copy
import pickle

import numpy as np
import pytest

from pydp_r.data import (
    PPGDaliaFormatError,
    load_ppg_dalia_subject,
    load_ppg_dalia_subjects,
    normalize_ppg_dalia_subject,
    save_ppg_dalia_subject,
    synthetic_ppg_subject,
)

WRIST = ("ACC", "BVP", "EDA", "TEMP")
CHEST = ("ACC", "ECG", "EMG", "EDA", "Temp", "Resp")


@pytest.fixture(scope="module")
def subject():
    return synthetic_ppg_subject(n_labels=30, seed=5, chest_seconds=2.0)


def _assert_same_subject(loaded, original):
    assert set(loaded) == {"signal", "label", "activity", "questionnaire", "rpeaks", "subject"}
    for name in WRIST:
        np.testing.assert_array_equal(
            loaded["signal"]["wrist"][name], original["signal"]["wrist"][name]
        )
    for name in CHEST:
        np.testing.assert_array_equal(
            loaded["signal"]["chest"][name], original["signal"]["chest"][name]
        )
    np.testing.assert_array_equal(loaded["label"], original["label"])
    np.testing.assert_array_equal(loaded["activity"], original["activity"])
    np.testing.assert_array_equal(loaded["rpeaks"], original["rpeaks"])
    assert loaded["questionnaire"] == original["questionnaire"]
    assert loaded["subject"] == original["subject"]
    assert all(isinstance(key, str) for key in loaded["questionnaire"])


def test_round_trip_with_str_keys(subject, tmp_path):
    path = tmp_path / "S5.pkl"
    save_ppg_dalia_subject(subject, path)
    with open(path, "rb") as file:
        assert file.read(2) == b"\x80\x02"  # protocol 2, as the dataset's files
    _assert_same_subject(load_ppg_dalia_subject(path), subject)


def test_round_trip_with_bytes_keys(subject, tmp_path):
    path = tmp_path / "S5.pkl"
    save_ppg_dalia_subject(subject, path, bytes_keys=True)
    with open(path, "rb") as file:
        raw = pickle.load(file)
    # The file really holds bytes keys and values, so the loader's decoding is exercised.
    assert b"signal" in raw and b"wrist" in raw[b"signal"] and raw[b"subject"] == b"S5"
    assert raw[b"questionnaire"][b"Gender"] in (b"m", b"f")
    _assert_same_subject(load_ppg_dalia_subject(path), subject)


def test_bytes_keys_written_by_hand_in_the_test(subject, tmp_path):
    """A bytes-key variant built here, independent of save_ppg_dalia_subject's conversion."""

    def to_bytes(value):
        if isinstance(value, dict):
            return {key.encode("ascii"): to_bytes(item) for key, item in value.items()}
        return value.encode("ascii") if isinstance(value, str) else value

    path = tmp_path / "S5.pkl"
    with open(path, "wb") as file:
        pickle.dump(to_bytes(copy.deepcopy(subject)), file, protocol=2)
    _assert_same_subject(load_ppg_dalia_subject(path), subject)


class _Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING opcodes), as the dataset's files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_python2_str(self, value):
        raw = value.encode("latin1") if isinstance(value, str) else bytes(value)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(value)

    dispatch[str] = _save_python2_str
    dispatch[bytes] = _save_python2_str


def test_python2_style_pickle_needs_latin1_and_loads(subject, tmp_path):
    path = tmp_path / "S5.pkl"
    with open(path, "wb") as file:
        _Python2Pickler(file, protocol=2).dump(subject)
    # NumPy buffers stored as Python 2 str are not ASCII: the default decoding fails on them.
    with open(path, "rb") as file, pytest.raises(UnicodeDecodeError):
        pickle.load(file)
    _assert_same_subject(load_ppg_dalia_subject(path), subject)


def test_subject_name_falls_back_to_file_name(subject, tmp_path):
    unnamed = {key: value for key, value in subject.items() if key != "subject"}
    path = tmp_path / "S9.pkl"
    with open(path, "wb") as file:
        pickle.dump(unnamed, file, protocol=2)
    assert load_ppg_dalia_subject(path)["subject"] == "S9"


def test_one_dimensional_single_column_signals_become_columns(subject):
    flat = copy.deepcopy(subject)
    flat["signal"]["wrist"]["BVP"] = flat["signal"]["wrist"]["BVP"][:, 0]
    flat["label"] = flat["label"][:, np.newaxis]
    loaded = normalize_ppg_dalia_subject(flat)
    assert loaded["signal"]["wrist"]["BVP"].shape == subject["signal"]["wrist"]["BVP"].shape
    assert loaded["label"].shape == subject["label"].shape


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "S1.pkl"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_ppg_dalia_subject(path)


def test_truncated_pickle(subject, tmp_path):
    path = tmp_path / "S5.pkl"
    save_ppg_dalia_subject(subject, path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(PPGDaliaFormatError, match="truncated") as error:
        load_ppg_dalia_subject(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_file_that_is_not_a_pickle(tmp_path):
    path = tmp_path / "S1.pkl"
    path.write_text("subject,label\nS1,80\n")
    with pytest.raises(PPGDaliaFormatError, match="S1.pkl"):
        load_ppg_dalia_subject(path)


def _without(subject, *keys):
    broken = copy.deepcopy(subject)
    parent = broken
    for key in keys[:-1]:
        parent = parent[key]
    del parent[keys[-1]]
    return broken


@pytest.mark.parametrize(
    "keys",
    [
        ("signal",),
        ("signal", "wrist"),
        ("signal", "wrist", "BVP"),
        ("signal", "wrist", "ACC"),
        ("signal", "chest", "ECG"),
        ("label",),
        ("activity",),
    ],
)
def test_missing_key_names_its_path(subject, tmp_path, keys):
    path = tmp_path / "S5.pkl"
    with open(path, "wb") as file:
        pickle.dump(_without(subject, *keys), file, protocol=2)
    key_path = "/".join(keys)
    with pytest.raises(PPGDaliaFormatError, match=f"'{key_path}': missing key") as error:
        load_ppg_dalia_subject(path)
    assert error.value.key_path == key_path
    assert str(path) in str(error.value)


def test_optional_parts_may_be_absent(subject):
    minimal = _without(_without(_without(subject, "questionnaire"), "rpeaks"), "signal", "chest")
    loaded = normalize_ppg_dalia_subject(minimal)
    assert loaded["signal"]["chest"] == {}
    assert loaded["questionnaire"] == {}
    assert loaded["rpeaks"].shape == (0,)


@pytest.mark.parametrize(
    "keys, value, expected",
    [
        (("signal", "wrist", "ACC"), np.zeros((10, 2)), r"'signal/wrist/ACC'.*\(n, 3\)"),
        (("signal", "wrist", "EDA"), np.zeros((10, 2)), r"'signal/wrist/EDA'.*\(n, 1\)"),
        (("signal", "chest", "Resp"), np.zeros((2, 2, 2)), r"'signal/chest/Resp'"),
        (("signal", "wrist", "TEMP"), np.array(["warm", "cold"]), r"'signal/wrist/TEMP'.*numeric"),
        (("signal", "wrist"), [1, 2, 3], r"'signal/wrist'.*expected a dict"),
        (("rpeaks",), np.zeros((3, 3)), r"'rpeaks'"),
    ],
)
def test_malformed_entry_names_its_path(subject, keys, value, expected):
    broken = copy.deepcopy(subject)
    parent = broken
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    with pytest.raises(PPGDaliaFormatError, match=expected):
        normalize_ppg_dalia_subject(broken)


def test_top_level_must_be_a_dict(tmp_path):
    path = tmp_path / "S1.pkl"
    with open(path, "wb") as file:
        pickle.dump([1, 2, 3], file, protocol=2)
    with pytest.raises(PPGDaliaFormatError, match="expected a dict at the top level"):
        load_ppg_dalia_subject(path)


def test_save_checks_the_layout_first(subject, tmp_path):
    path = tmp_path / "S5.pkl"
    with pytest.raises(PPGDaliaFormatError, match="signal/wrist/TEMP"):
        save_ppg_dalia_subject(_without(subject, "signal", "wrist", "TEMP"), path)
    assert not path.exists()


# Several subjects: the dataset's PPG_FieldStudy/S{i}/S{i}.pkl layout, built here in small.


@pytest.fixture(scope="module")
def field_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("PPG-DaLiA")
    subjects = {}
    for number in (1, 2, 10):
        name = f"S{number}"
        folder = root / "PPG_FieldStudy" / name
        folder.mkdir(parents=True)
        # The pickle's own subject entry differs from its file name: the file name is the id.
        subjects[name] = synthetic_ppg_subject(
            n_labels=20 + number, seed=number, chest_seconds=1.0, name=f"file {number}"
        )
        save_ppg_dalia_subject(subjects[name], folder / f"{name}.pkl", bytes_keys=number == 2)
    return root, subjects


def test_load_subjects_by_id_in_subject_number_order(field_study):
    root, subjects = field_study
    loaded = load_ppg_dalia_subjects(root)  # the dataset root: PPG_FieldStudy is found
    assert list(loaded) == ["S1", "S2", "S10"]
    for name, subject in loaded.items():
        assert subject["subject"] == name
        np.testing.assert_array_equal(subject["label"], subjects[name]["label"])
        np.testing.assert_array_equal(
            subject["signal"]["wrist"]["BVP"], subjects[name]["signal"]["wrist"]["BVP"]
        )
        assert subject["signal"]["chest"] == {}  # dropped unless asked for
    assert list(load_ppg_dalia_subjects(root / "PPG_FieldStudy")) == ["S1", "S2", "S10"]


def test_load_chosen_subjects_with_chest(field_study):
    root, subjects = field_study
    loaded = load_ppg_dalia_subjects(root, ["S10", "S1"], include_chest=True)
    assert list(loaded) == ["S10", "S1"]
    np.testing.assert_array_equal(
        loaded["S10"]["signal"]["chest"]["ECG"], subjects["S10"]["signal"]["chest"]["ECG"]
    )


@pytest.mark.parametrize(
    "subjects, message",
    [
        (["S3"], r"subjects must be among .*\['S1', 'S2', 'S10'\].*\['S3'\]"),
        (["S1", "S1"], r"subjects .*\['S1'\] more than once"),
        ([], "subjects must be a non-empty list"),
        ("S1", "subjects must be a non-empty list"),
        ([1], "subjects must be a non-empty list"),
    ],
)
def test_load_subjects_rejects_bad_ids(field_study, subjects, message):
    root, _ = field_study
    with pytest.raises(ValueError, match=message):
        load_ppg_dalia_subjects(root, subjects)


def test_load_subjects_from_a_folder_without_subjects(tmp_path):
    with pytest.raises(FileNotFoundError, match="no subject files"):
        load_ppg_dalia_subjects(tmp_path)
