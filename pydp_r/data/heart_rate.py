"""Heart-rate estimation data from the wrist (E4) signals of PPG-DaLiA subjects.

Follows the R walkthrough: ACC, BVP, EDA and TEMP are averaged over 2 s (the label period), the six
resulting features are cut into sequences of ``num_timesteps`` steps, and each sequence is labelled
with the heart rate of its last step. One subject is split in time at label ``train_max`` before
sequences are cut, so no sequence crosses the split; several subjects are split leave-one-out,
or by person into arrays that carry each sequence's user id (``heart_rate_sequences``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from pydp_r._checks import check_count
from pydp_r.data.ppg_dalia import (
    LABEL_PERIOD_SECONDS,
    WRIST_RATES_HZ,
    check_subject_ids,
    find_subject_files,
    load_ppg_dalia_subject,
    normalize_ppg_dalia_subject,
)
from pydp_r.data.sequences import average_windows, sliding_sequences

__all__ = [
    "FEATURE_NAMES",
    "WINDOW_SIZES",
    "find_subject_files",
    "heart_rate_arrays",
    "heart_rate_datasets",
    "heart_rate_sequences",
    "leave_one_subject_out",
]

#: Samples averaged per 2 s step for each wrist signal (rate in Hz times 2 s).
WINDOW_SIZES: dict[str, int] = {
    name: rate * LABEL_PERIOD_SECONDS for name, rate in WRIST_RATES_HZ.items()
}
#: Feature columns of every sequence, in order.
FEATURE_NAMES: tuple[str, ...] = ("ACC_x", "ACC_y", "ACC_z", "BVP", "EDA", "TEMP")


def _as_subject(subject: Any) -> dict[str, Any]:
    """Accepts a subject dict or a pickle path and returns the normalized dict."""
    if isinstance(subject, Mapping):
        return normalize_ppg_dalia_subject(subject)
    if isinstance(subject, (str, os.PathLike)):
        return load_ppg_dalia_subject(subject)
    raise ValueError(
        f"subject must be a PPG-DaLiA subject dict or a path to its pickle, got "
        f"{type(subject).__name__}."
    )


def _step_features(subject: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Returns the 2 s means of the wrist signals, (n_labels, 6) float32, and labels (n_labels,)."""
    labels = np.asarray(subject["label"], dtype=np.float64)
    n_labels = labels.shape[0]
    wrist = subject["signal"]["wrist"]
    columns = []
    for name, window in WINDOW_SIZES.items():
        values = wrist[name]
        needed = n_labels * window
        if values.shape[0] < needed:
            raise ValueError(
                f"signal/wrist/{name} of subject {subject.get('subject', '')!r} has "
                f"{values.shape[0]} samples, fewer than the {needed} that {n_labels} labels "
                f"need ({window} per label)."
            )
        # Cut at the label count first, as the walkthrough does: later samples have no label.
        columns.append(average_windows(values[:needed], window))
    if not np.all(np.isfinite(labels)):
        raise ValueError(
            f"label of subject {subject.get('subject', '')!r} must contain only finite values."
        )
    return np.concatenate(columns, axis=1), labels


def _sequences_and_targets(
    steps: np.ndarray, labels: np.ndarray, num_timesteps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding sequences of ``steps`` and the label of each sequence's last step, (n, 1)."""
    x = sliding_sequences(steps, num_timesteps)
    y = labels[num_timesteps - 1 :].astype(np.float32)[:, np.newaxis]
    return x, y


def _standardization(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = steps.mean(axis=0, dtype=np.float64)
    std = steps.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)


def heart_rate_arrays(
    subject: Any,
    train_max: int = 4000,
    num_timesteps: int = 12,
    standardize: bool = False,
    with_user_ids: bool = False,
) -> tuple[np.ndarray, ...]:
    """Builds the walkthrough's training and test sequences of one subject as numpy arrays.

    Args:
        subject: Subject dict (from ``load_ppg_dalia_subject`` or ``synthetic_ppg_subject``) or a
            path to its pickle.
        train_max: Labels ``[0, train_max)`` form the training part and ``[train_max, n_labels)``
            the test part; integer in [num_timesteps, n_labels - num_timesteps].
        num_timesteps: Steps (2 s each) per sequence, integer >= 1.
        standardize: If True, each feature is shifted and scaled by the mean and standard
            deviation of the training part's 2 s steps (test steps use the same values).
        with_user_ids: If True, also return the user id of every sequence (the subject's
            ``subject`` entry), for user-level accounting and splits by person.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: x float32 ``(n, num_timesteps, 6)`` with features
        ACC x, y, z, BVP, EDA, TEMP; y float32 ``(n, 1)``, the heart rate (bpm) of each
        sequence's last step. ``n`` is ``train_max - num_timesteps + 1`` for training and
        ``n_labels - train_max - num_timesteps + 1`` for test (3,989 and 592 for S1). With
        ``with_user_ids``, ``(x_train, y_train, x_test, y_test, user_ids_train,
        user_ids_test)``, the ids a str array ``(n,)`` each.

    Raises:
        ValueError: If an argument is outside its range, a wrist signal is shorter than the labels
            need, or the subject lacks part of the PPG-DaLiA layout (``PPGDaliaFormatError``).
        FileNotFoundError: If ``subject`` is a path that does not exist.
    """
    num_timesteps = check_count("num_timesteps", num_timesteps)
    train_max = check_count("train_max", train_max)
    subject = _as_subject(subject)
    n_labels = subject["label"].shape[0]
    if not num_timesteps <= train_max <= n_labels - num_timesteps:
        raise ValueError(
            f"train_max must be in [num_timesteps, n_labels - num_timesteps] = "
            f"[{num_timesteps}, {n_labels - num_timesteps}] for {n_labels} labels and "
            f"num_timesteps={num_timesteps}, got {train_max}."
        )
    steps, labels = _step_features(subject)
    if standardize:
        mean, std = _standardization(steps[:train_max])
        steps = ((steps - mean) / std).astype(np.float32)
    x_train, y_train = _sequences_and_targets(steps[:train_max], labels[:train_max], num_timesteps)
    x_test, y_test = _sequences_and_targets(steps[train_max:], labels[train_max:], num_timesteps)
    if not with_user_ids:
        return x_train, y_train, x_test, y_test
    user = subject["subject"]
    user_ids_train, user_ids_test = _user_ids(user, len(y_train)), _user_ids(user, len(y_test))
    return x_train, y_train, x_test, y_test, user_ids_train, user_ids_test


def _user_ids(user: str, count: int) -> np.ndarray:
    return np.repeat(np.array([user], dtype=np.str_), count)


def heart_rate_sequences(
    subjects: Any, num_timesteps: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All sequences of several subjects with the user id of each, none crossing two subjects.

    Each subject is cut on its own, every label from ``num_timesteps - 1`` on (no time split:
    split by person with ``leave_subjects_out`` or ``subject_folds`` instead). Features are not
    standardized; scale them with statistics of the training subjects or of public data.

    Args:
        subjects: A dict from user id to subject (``load_ppg_dalia_subjects``), or a list of
            subjects (``synthetic_ppg_population``; each one's ``subject`` entry is its id),
            dicts or paths to pickles. Ids must be distinct and non-empty.
        num_timesteps: Steps (2 s each) per sequence, integer in [1, smallest label count].

    Returns:
        ``(x, y, user_ids)``: x float32 ``(n, num_timesteps, 6)`` (features as in
        ``heart_rate_arrays``), y float32 ``(n, 1)`` in bpm, user_ids a str array ``(n,)``;
        subjects in the given order, each one's sequences in time order.

    Raises:
        ValueError: If ``subjects`` is empty, holds something other than subjects, repeats an
            id, or a subject has fewer than ``num_timesteps`` labels.
        FileNotFoundError: If a path does not exist.
    """
    num_timesteps = check_count("num_timesteps", num_timesteps)
    if isinstance(subjects, Mapping):
        named = [(name, _as_subject(subject)) for name, subject in subjects.items()]
    elif isinstance(subjects, (str, os.PathLike)) or not isinstance(subjects, Iterable):
        raise ValueError(
            f"subjects must be a dict from user id to subject or a list of subjects, got "
            f"{type(subjects).__name__}."
        )
    else:
        named = [(subject["subject"], subject) for subject in map(_as_subject, subjects)]
    check_subject_ids([name for name, _ in named], "subjects' ids")
    xs, ys, ids = [], [], []
    for name, subject in named:
        steps, labels = _step_features(subject)
        if labels.shape[0] < num_timesteps:
            raise ValueError(
                f"num_timesteps must be at most the label count of every subject; {name!r} "
                f"has {labels.shape[0]}, got {num_timesteps}."
            )
        x, y = _sequences_and_targets(steps, labels, num_timesteps)
        xs.append(x)
        ys.append(y)
        ids.append(_user_ids(name, len(y)))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)


def _check_batch_options(batch_size: Any, seed: Any) -> int:
    """Checks the batching arguments shared by both builders; returns batch_size as an int."""
    batch_size = check_count("batch_size", batch_size)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}.")
    return batch_size


def heart_rate_datasets(
    subject: Any,
    train_max: int = 4000,
    num_timesteps: int = 12,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    standardize: bool = False,
    drop_remainder: bool = False,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Builds the walkthrough's batched training and test datasets for one subject.

    Args:
        subject: Subject dict or path to its pickle (see ``heart_rate_arrays``).
        train_max: First label of the test part, integer in [num_timesteps, n_labels -
            num_timesteps]; default 4000 as in the walkthrough.
        num_timesteps: Steps (2 s each) per sequence, integer >= 1; default 12 (24 s).
        batch_size: Sequences per batch, integer >= 1.
        shuffle: Whether to shuffle the training sequences (full buffer, reshuffled each epoch).
            The test set is never shuffled.
        seed: Shuffle seed, integer >= 0, or None for a different order each run.
        standardize: If True, standardize features with training-part statistics.
        drop_remainder: If True, the training set drops its last partial batch (needed when a DP
            optimizer's ``num_microbatches`` must divide every batch). The test set keeps it.

    Returns:
        ``(ds_train, ds_test)`` yielding ``(x, y)`` with x float32 ``(batch, num_timesteps, 6)``
        and y float32 ``(batch, 1)`` in bpm. Neither repeats; Keras ``fit`` runs the epochs.

    Raises:
        ValueError: If an argument is outside its range or the subject is malformed.
        FileNotFoundError: If ``subject`` is a path that does not exist.
    """
    batch_size = _check_batch_options(batch_size, seed)
    x_train, y_train, x_test, y_test = heart_rate_arrays(
        subject, train_max=train_max, num_timesteps=num_timesteps, standardize=standardize
    )
    ds_train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    if shuffle:
        ds_train = ds_train.shuffle(x_train.shape[0], seed=seed, reshuffle_each_iteration=True)
    ds_train = ds_train.batch(batch_size, drop_remainder=drop_remainder)
    ds_test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size)
    return ds_train.prefetch(tf.data.AUTOTUNE), ds_test.prefetch(tf.data.AUTOTUNE)


def _subject_sequences(
    path: str, num_timesteps: int, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    steps, labels = _step_features(load_ppg_dalia_subject(path))
    if labels.shape[0] < num_timesteps:
        raise ValueError(
            f"num_timesteps must be at most the label count of every subject; {path} has "
            f"{labels.shape[0]}, got {num_timesteps}."
        )
    steps = ((steps - mean) / std).astype(np.float32)
    return _sequences_and_targets(steps, labels, num_timesteps)


def leave_one_subject_out(
    data_dir: str | os.PathLike,
    test_subject: str,
    num_timesteps: int = 12,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    standardize: bool = False,
    drop_remainder: bool = False,
    subjects_in_memory: int = 2,
    shuffle_buffer: int = 10000,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Splits a folder of subjects into all-but-one for training and one for testing, streamed.

    Subjects are loaded one file at a time while the datasets are iterated (at most
    ``subjects_in_memory`` at once), never all together. Each subject is cut into sequences on its
    own, so no sequence crosses a subject boundary; every label from ``num_timesteps - 1`` on is
    used. The datasets' cardinality is unknown to TensorFlow.

    Args:
        data_dir: Folder of ``S*.pkl`` (or ``S*/S*.pkl``) subject files.
        test_subject: Name of the held-out subject, e.g. ``"S1"`` (the file name without .pkl).
        num_timesteps: Steps (2 s each) per sequence, integer in [1, smallest label count].
        batch_size: Sequences per batch, integer >= 1.
        shuffle: Whether to shuffle training subjects' order (each epoch) and their sequences
            through a buffer of ``shuffle_buffer``. The test set is never shuffled.
        seed: Shuffle seed, integer >= 0, or None.
        standardize: If True, features are standardized with the mean and standard deviation of
            all training subjects' 2 s steps; this costs one extra pass over the training files
            when the function is called.
        drop_remainder: If True, the training set drops its last partial batch.
        subjects_in_memory: Training subjects read in turn (interleaved), integer >= 1.
        shuffle_buffer: Sequences in the shuffle buffer, integer >= 1 (about 4,600 per subject).

    Returns:
        ``(ds_train, ds_test)`` yielding ``(x, y)``: x float32 ``(batch, num_timesteps, 6)``, y
        float32 ``(batch, 1)`` in bpm. Neither repeats.

    Raises:
        FileNotFoundError: If ``data_dir`` holds no subject files.
        ValueError: If ``test_subject`` is not among them, it is the only subject, or another
            argument is outside its range. Malformed files raise when the data are read.
    """
    num_timesteps = check_count("num_timesteps", num_timesteps)
    batch_size = _check_batch_options(batch_size, seed)
    subjects_in_memory = check_count("subjects_in_memory", subjects_in_memory)
    shuffle_buffer = check_count("shuffle_buffer", shuffle_buffer)
    files = find_subject_files(data_dir)
    if test_subject not in files:
        raise ValueError(f"test_subject must be one of {list(files)}, got {test_subject!r}.")
    train_paths = [path for name, path in files.items() if name != test_subject]
    if not train_paths:
        raise ValueError(
            f"data_dir must hold at least one subject besides test_subject {test_subject!r}."
        )

    n_features = len(FEATURE_NAMES)
    mean, std = np.zeros(n_features), np.ones(n_features)
    if standardize:
        total, total_sq, count = np.zeros(n_features), np.zeros(n_features), 0
        for path in train_paths:
            steps, _ = _step_features(load_ppg_dalia_subject(path))
            steps = steps.astype(np.float64)
            total += steps.sum(axis=0)
            total_sq += np.square(steps).sum(axis=0)
            count += steps.shape[0]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
        std = np.where(std > 0, std, 1.0)

    signature = (
        tf.TensorSpec((None, num_timesteps, n_features), tf.float32),
        tf.TensorSpec((None, 1), tf.float32),
    )

    def one_subject(path: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        text = path.decode() if isinstance(path, bytes) else str(path)
        yield _subject_sequences(text, num_timesteps, mean, std)

    def subject_dataset(path: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            one_subject, args=(path,), output_signature=signature
        ).unbatch()

    ds_train = tf.data.Dataset.from_tensor_slices(train_paths)
    if shuffle:
        ds_train = ds_train.shuffle(len(train_paths), seed=seed, reshuffle_each_iteration=True)
    ds_train = ds_train.interleave(subject_dataset, cycle_length=subjects_in_memory, block_length=1)
    if shuffle:
        ds_train = ds_train.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds_train = ds_train.batch(batch_size, drop_remainder=drop_remainder)
    ds_test = subject_dataset(tf.constant(files[test_subject])).batch(batch_size)
    return ds_train.prefetch(tf.data.AUTOTUNE), ds_test.prefetch(tf.data.AUTOTUNE)
