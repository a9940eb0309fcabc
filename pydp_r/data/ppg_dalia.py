"""Loaders for PPG-DaLiA subject pickles (``S1.pkl`` ... ``S15.pkl``), one or a folder of them.

PPG-DaLiA (Reiss et al., 2019) records 15 subjects with a wrist device (Empatica E4) and a chest
device (RespiBAN). Each subject is a dict pickled by Python 2, so it is read with
``encoding="latin1"`` (NumPy array buffers were Python 2 ``str``), and dict keys that arrive as
``bytes`` are turned into ``str``.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ACTIVITY_CODES",
    "ACTIVITY_RATE_HZ",
    "CHEST_CHANNELS",
    "CHEST_RATE_HZ",
    "LABEL_PERIOD_SECONDS",
    "LABEL_WINDOW_SECONDS",
    "PPGDaliaFormatError",
    "FIELD_STUDY_FOLDER",
    "QUESTIONNAIRE_KEYS",
    "WRIST_CHANNELS",
    "WRIST_RATES_HZ",
    "check_subject_ids",
    "find_subject_files",
    "load_ppg_dalia_subject",
    "load_ppg_dalia_subjects",
    "normalize_ppg_dalia_subject",
]

#: Sampling rates of the Empatica E4 wrist signals, in Hz.
WRIST_RATES_HZ: dict[str, int] = {"ACC": 32, "BVP": 64, "EDA": 4, "TEMP": 4}
#: Columns per wrist signal (ACC has x, y, z).
WRIST_CHANNELS: dict[str, int] = {"ACC": 3, "BVP": 1, "EDA": 1, "TEMP": 1}
#: Sampling rate of every RespiBAN chest signal, in Hz.
CHEST_RATE_HZ: int = 700
#: Columns per chest signal.
CHEST_CHANNELS: dict[str, int] = {"ACC": 3, "ECG": 1, "EMG": 1, "EDA": 1, "Temp": 1, "Resp": 1}
#: Rate of the activity codes, in Hz.
ACTIVITY_RATE_HZ: int = 4
#: One heart-rate label every this many seconds ...
LABEL_PERIOD_SECONDS: int = 2
#: ... each the mean heart rate over a window of this many seconds.
LABEL_WINDOW_SECONDS: int = 8

#: Keys of the per-subject questionnaire dict.
QUESTIONNAIRE_KEYS: tuple[str, ...] = ("WEIGHT", "Gender", "AGE", "HEIGHT", "SKIN", "SPORT")
#: Activity codes of the ``activity`` signal, as in the dataset's readme.
ACTIVITY_CODES: dict[int, str] = {
    0: "transient",
    1: "sitting",
    2: "ascending and descending stairs",
    3: "table soccer",
    4: "cycling",
    5: "driving a car",
    6: "lunch break",
    7: "walking",
    8: "working",
}


class PPGDaliaFormatError(ValueError):
    """A file or dict does not have the PPG-DaLiA subject layout.

    Attributes:
        source: The file path or a description of the object that was checked.
        key_path: Slash-separated key path of the offending entry (e.g. ``"signal/wrist/BVP"``),
            or None when the problem is the whole file.
    """

    def __init__(self, source: str, message: str, key_path: str | None = None) -> None:
        self.source = source
        self.key_path = key_path
        where = f" at '{key_path}'" if key_path else ""
        super().__init__(f"{source}: not a PPG-DaLiA subject{where}: {message}")


def _text(value: Any) -> Any:
    """Decodes Python 2 ``str`` values that arrive as bytes; leaves anything else alone."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return value


def _str_keys(mapping: Mapping, source: str, key_path: str) -> dict[str, Any]:
    """Returns ``mapping`` with its keys as ``str``, one level deep."""
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        key = _text(key)
        if not isinstance(key, str):
            raise PPGDaliaFormatError(source, f"key {key!r} is not a string", key_path or None)
        result[key] = value
    return result


def _mapping_at(parent: Mapping, key: str, source: str, key_path: str) -> dict[str, Any]:
    if key not in parent:
        raise PPGDaliaFormatError(source, "missing key", key_path)
    value = parent[key]
    if not isinstance(value, Mapping):
        raise PPGDaliaFormatError(source, f"expected a dict, got {type(value).__name__}", key_path)
    return _str_keys(value, source, key_path)


def _signal(value: Any, columns: int, source: str, key_path: str) -> np.ndarray:
    """Returns a float64 ``(n, columns)`` array; a 1-D single-column signal is reshaped."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise PPGDaliaFormatError(source, f"not a numeric array ({error})", key_path) from None
    if array.ndim == 1 and columns == 1:
        array = array[:, np.newaxis]
    if array.ndim != 2 or array.shape[1] != columns:
        expected = f"(n, {columns})" + (" or (n,)" if columns == 1 else "")
        raise PPGDaliaFormatError(source, f"expected shape {expected}, got {array.shape}", key_path)
    return array


def normalize_ppg_dalia_subject(subject: Mapping, source: str = "subject") -> dict[str, Any]:
    """Checks a PPG-DaLiA subject dict and returns it with str keys and float64 array signals.

    Args:
        subject: Dict as unpickled from ``S*.pkl`` (str or bytes keys) or made by
            ``synthetic_ppg_subject``.
        source: Name used in error messages (the file path when loading).

    Returns:
        A new dict with keys ``signal`` (``wrist``: ``ACC`` (n, 3), ``BVP``, ``EDA``, ``TEMP``
        (n, 1); ``chest``: ``ACC`` (n, 3), ``ECG``, ``EMG``, ``EDA``, ``Temp``, ``Resp`` (n, 1),
        or an empty dict when the subject has no chest signals), ``label`` (float64 (n_labels,),
        heart rate in bpm), ``activity`` (float64 (n, 1) codes at 4 Hz), ``questionnaire`` (dict,
        empty when absent), ``rpeaks`` (int64 sample indices at 700 Hz, empty when absent) and
        ``subject`` (str).

    Raises:
        PPGDaliaFormatError: (a ValueError) naming ``source`` and the key path of the first
            missing or malformed entry.
    """
    if not isinstance(subject, Mapping):
        raise PPGDaliaFormatError(
            source, f"expected a dict at the top level, got {type(subject).__name__}"
        )
    top = _str_keys(subject, source, "")
    signal = _mapping_at(top, "signal", source, "signal")
    wrist = _mapping_at(signal, "wrist", source, "signal/wrist")
    wrist_out = {}
    for name, columns in WRIST_CHANNELS.items():
        key_path = f"signal/wrist/{name}"
        if name not in wrist:
            raise PPGDaliaFormatError(source, "missing key", key_path)
        wrist_out[name] = _signal(wrist[name], columns, source, key_path)

    chest_out = {}
    if "chest" in signal:
        chest = _mapping_at(signal, "chest", source, "signal/chest")
        if chest:
            for name, columns in CHEST_CHANNELS.items():
                key_path = f"signal/chest/{name}"
                if name not in chest:
                    raise PPGDaliaFormatError(source, "missing key", key_path)
                chest_out[name] = _signal(chest[name], columns, source, key_path)

    if "label" not in top:
        raise PPGDaliaFormatError(source, "missing key", "label")
    label = _signal(top["label"], 1, source, "label")[:, 0]
    if label.shape[0] < 1:
        raise PPGDaliaFormatError(source, "no heart-rate labels", "label")

    if "activity" not in top:
        raise PPGDaliaFormatError(source, "missing key", "activity")
    activity = _signal(top["activity"], 1, source, "activity")

    questionnaire: dict[str, Any] = {}
    if "questionnaire" in top:
        raw = _mapping_at(top, "questionnaire", source, "questionnaire")
        questionnaire = {key: _text(value) for key, value in raw.items()}

    rpeaks = np.zeros(0, dtype=np.int64)
    if "rpeaks" in top:
        rpeaks_raw = np.asarray(top["rpeaks"])
        if rpeaks_raw.ndim != 1 or not (
            rpeaks_raw.size == 0 or np.issubdtype(rpeaks_raw.dtype, np.number)
        ):
            raise PPGDaliaFormatError(
                source, f"expected a 1-D array of sample indices, got {rpeaks_raw.shape}", "rpeaks"
            )
        rpeaks = rpeaks_raw.astype(np.int64)

    name = _text(top.get("subject", ""))
    if not isinstance(name, str):
        raise PPGDaliaFormatError(source, f"expected a str, got {type(name).__name__}", "subject")

    return {
        "signal": {"wrist": wrist_out, "chest": chest_out},
        "label": label,
        "activity": activity,
        "questionnaire": questionnaire,
        "rpeaks": rpeaks,
        "subject": name,
    }


def load_ppg_dalia_subject(path: str | os.PathLike) -> dict[str, Any]:
    """Loads one PPG-DaLiA subject pickle into a dict with str keys.

    Unpickling runs code named in the file: load only files you trust (the dataset's own, or
    ones written by ``save_ppg_dalia_subject``).

    Args:
        path: Path to a subject file such as ``PPG_FieldStudy/S1/S1.pkl``.

    Returns:
        The subject as described in ``normalize_ppg_dalia_subject``: ``signal`` (``wrist`` E4 and
        ``chest`` RespiBAN signals), ``label`` (bpm, one per 2 s, each the mean over 8 s),
        ``activity``, ``questionnaire``, ``rpeaks`` and ``subject`` (falls back to the file name
        without extension when the file has no ``subject`` entry).

    Raises:
        FileNotFoundError: If ``path`` does not exist (the message names it).
        PPGDaliaFormatError: (a ValueError) If the file is truncated, is not a pickle, or lacks
            an entry of the layout; the message names the path and the missing key path.
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"PPG-DaLiA subject file not found: {path_str}")
    try:
        with open(path_str, "rb") as file:
            raw = pickle.load(file, encoding="latin1")
    except (EOFError, pickle.UnpicklingError) as error:
        raise PPGDaliaFormatError(
            path_str, f"the file is truncated or not a pickle ({type(error).__name__}: {error})"
        ) from None
    except (AttributeError, ImportError, IndexError, TypeError, ValueError) as error:
        raise PPGDaliaFormatError(
            path_str, f"the pickle could not be read ({type(error).__name__}: {error})"
        ) from None
    subject = normalize_ppg_dalia_subject(raw, source=path_str)
    if not subject["subject"]:
        subject["subject"] = os.path.splitext(os.path.basename(path_str))[0]
    return subject


def _subject_key(path: str) -> tuple[int, str]:
    """Sorts S2 before S10."""
    stem = os.path.splitext(os.path.basename(path))[0]
    match = re.fullmatch(r"S(\d+)", stem)
    return (int(match.group(1)) if match else 1 << 30, stem)


#: Folder of the subject pickles inside the unpacked dataset.
FIELD_STUDY_FOLDER = "PPG_FieldStudy"


def find_subject_files(data_dir: str | os.PathLike) -> dict[str, str]:
    """Finds subject pickles ``S*.pkl`` in a folder (flat, or one folder per subject as shipped).

    Args:
        data_dir: Folder holding ``S1.pkl``, ``S2.pkl``, ... or ``S1/S1.pkl``, ``S2/S2.pkl``, ...
            or the unpacked dataset whose ``PPG_FieldStudy`` folder holds them.

    Returns:
        Dict from subject name (file name without ``.pkl``) to path, in subject-number order.

    Raises:
        FileNotFoundError: If ``data_dir`` is not a folder or holds no ``S*.pkl``.
    """
    folder = os.fspath(data_dir)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data_dir is not a folder: {folder}")
    field_study = os.path.join(folder, FIELD_STUDY_FOLDER)
    if os.path.isdir(field_study):
        folder = field_study
    paths = glob.glob(os.path.join(folder, "S*.pkl")) + glob.glob(
        os.path.join(folder, "S*", "S*.pkl")
    )
    files: dict[str, str] = {}
    for path in sorted(paths, key=_subject_key):
        files.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    if not files:
        raise FileNotFoundError(f"no subject files S*.pkl (or S*/S*.pkl) in {folder}")
    return files


def load_ppg_dalia_subjects(
    data_dir: str | os.PathLike,
    subjects: Sequence[str] | None = None,
    *,
    include_chest: bool = False,
) -> dict[str, dict[str, Any]]:
    """Loads several PPG-DaLiA subjects (S1-S15 in the dataset), each under its subject id.

    Files are read one at a time; with ``include_chest=False`` each subject's 700 Hz chest
    signals are dropped as soon as it is read, so 15 real subjects hold about 0.2 GB (wrist,
    labels, activity) instead of several GB. Unpickling runs code named in the files: load
    only files you trust.

    Args:
        data_dir: The unpacked dataset (holding ``PPG_FieldStudy/``), or a folder of
            ``S*/S*.pkl`` or flat ``S*.pkl`` files (see ``find_subject_files``).
        subjects: Ids to load, e.g. ``["S1", "S2"]`` (file names without ``.pkl``), each
            present and listed once; None (default) loads every subject found.
        include_chest: Whether to keep the chest signals (``signal["chest"]``; otherwise it is
            an empty dict).

    Returns:
        Dict from subject id to the subject (as ``load_ppg_dalia_subject`` returns it), in
        subject-number order (S2 before S10) or the order of ``subjects``. Each subject's
        ``subject`` entry is its id (the file name), the user id its sequences carry.

    Raises:
        FileNotFoundError: If ``data_dir`` holds no subject files.
        ValueError: If ``subjects`` names an id that is not there or names one twice, or is
            empty; ``PPGDaliaFormatError`` (a ValueError) if a file is malformed.
    """
    files = find_subject_files(data_dir)
    if subjects is None:
        wanted = list(files)
    else:
        wanted = check_subject_ids(subjects, "subjects")
        missing = [name for name in wanted if name not in files]
        if missing:
            raise ValueError(
                f"subjects must be among the subjects found in {os.fspath(data_dir)} "
                f"{list(files)}; received {missing} that are not."
            )
    loaded: dict[str, dict[str, Any]] = {}
    for name in wanted:
        subject = load_ppg_dalia_subject(files[name])
        if not include_chest:
            subject["signal"]["chest"] = {}
        subject["subject"] = name
        loaded[name] = subject
    return loaded


def check_subject_ids(subject_ids: Any, name: str = "subject_ids") -> list[str]:
    """A non-empty list of distinct non-empty strings (subject or user ids).

    Args:
        subject_ids: An iterable of strings, or a dict whose keys are the ids (what
            ``load_ppg_dalia_subjects`` returns). A single string is refused, not split.
        name: The argument's name, for the error message.

    Raises:
        ValueError: Naming ``name``, for anything else, an empty list, or a repeated id.
    """
    valid = "a non-empty list of distinct non-empty strings"
    if isinstance(subject_ids, (str, bytes)) or not isinstance(subject_ids, Iterable):
        raise ValueError(f"{name} must be {valid}; received {subject_ids!r}.")
    ids = list(subject_ids.keys() if isinstance(subject_ids, Mapping) else subject_ids)
    if not ids or not all(isinstance(item, str) and item for item in ids):
        raise ValueError(f"{name} must be {valid}; received {ids!r}.")
    repeated = sorted({item for item in ids if ids.count(item) > 1})
    if repeated:
        raise ValueError(f"{name} must be {valid}; received {repeated} more than once.")
    return ids
