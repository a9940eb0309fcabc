"""Loader for one PPG-DaLiA subject pickle (``S1.pkl`` ... ``S15.pkl``).

PPG-DaLiA (Reiss et al., 2019) records 15 subjects with a wrist device (Empatica E4) and a chest
device (RespiBAN). Each subject is a dict pickled by Python 2, so it is read with
``encoding="latin1"`` (NumPy array buffers were Python 2 ``str``), and dict keys that arrive as
``bytes`` are turned into ``str``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
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
    "QUESTIONNAIRE_KEYS",
    "WRIST_CHANNELS",
    "WRIST_RATES_HZ",
    "load_ppg_dalia_subject",
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
