"""The demo's data: one subject per seed, scaled with public statistics, split in time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pydp_r import data as wearable_data

#: Training sequences at the end of the training part kept for validation.
VALIDATION_SEQUENCES = 600
#: A sequence covers 12 windows of 2 s; one 2-s window belongs to at most 12 sequences.
WINDOWS_PER_SEQUENCE = 12
#: Seed of the public synthetic subject whose training part gives the feature scaling (mean
#: and standard deviation of each feature): public statistics, not the training subject's.
PUBLIC_REFERENCE_SEED = 999

#: Non-members of the membership attack: this many blocks of consecutive training sequences,
#: chosen at random, leave training; the inner sequences of each share no window with a
#: sequence that stays, so they are i.i.d. with the training sequences, never trained on.
NON_MEMBER_BLOCKS = 10
NON_MEMBER_BLOCK_SEQUENCES = 40

#: (x_fit, y_fit, x_val, y_val, x_test, y_test, x_non_member, y_non_member) of one subject.
Arrays = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class DemoData:
    """What the runs train and are scored on, per seed, and where it came from."""

    arrays_by_seed: dict[int, Arrays]
    sources: list[str]  # one description per seed
    baselines: list[float]  # test MAE (bpm) of predicting the training mean, per seed
    scaling: tuple[np.ndarray, np.ndarray] | None

    @property
    def n_train(self) -> int:
        """Training sequences per seed (those of the first seed; all are the same length)."""
        return len(next(iter(self.arrays_by_seed.values()))[1])


def split_validation(
    x_train: np.ndarray, y_train: np.ndarray, validation: int = VALIDATION_SEQUENCES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_val, y_val): the last `validation` sequences in time are held out.

    The `WINDOWS_PER_SEQUENCE - 1` sequences before them share windows with the first held-out
    sequence and are dropped, so no window is in both parts.
    """
    gap = WINDOWS_PER_SEQUENCE - 1
    if not 0 < validation < len(y_train) - gap:
        raise ValueError(
            f"validation must be an integer in [1, {len(y_train) - gap - 1}] for "
            f"{len(y_train)} training sequences; received {validation!r}."
        )
    cut = len(y_train) - validation
    return x_train[: cut - gap], y_train[: cut - gap], x_train[cut:], y_train[cut:]


def split_non_members(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    seed: int,
    blocks: int = NON_MEMBER_BLOCKS,
    block_sequences: int = NON_MEMBER_BLOCK_SEQUENCES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_fit, y_fit, x_non_member, y_non_member): random blocks held out of training.

    The training sequences are cut into consecutive blocks of `block_sequences`; `blocks` of
    them, drawn at random with `seed`, leave training. A sequence covers 12 windows, so the
    first and last `WINDOWS_PER_SEQUENCE - 1` sequences of a block share windows with the
    training sequences next to it and are dropped; the rest are the non-members. Drawn from
    the whole training span, they are i.i.d. with the members, unlike the later test part
    (whose drift an attack would read as membership).

    Args:
        x_fit, y_fit: Training sequences in time order and their heart rates.
        seed: Seed of the draw, integer >= 0.
        blocks: Blocks held out, integer in [1, number of blocks - 1].
        block_sequences: Sequences per block, integer > 2 * (WINDOWS_PER_SEQUENCE - 1).

    Returns:
        The training arrays without the blocks, and the non-members, both in time order.

    Raises:
        ValueError: For `blocks` or `block_sequences` outside its range.
    """
    gap = WINDOWS_PER_SEQUENCE - 1
    if block_sequences <= 2 * gap:
        raise ValueError(
            f"block_sequences must be an integer > {2 * gap}; received {block_sequences!r}."
        )
    available = len(y_fit) // block_sequences
    if not 0 < blocks < available:
        raise ValueError(
            f"blocks must be an integer in [1, {available - 1}] for {len(y_fit)} sequences in "
            f"blocks of {block_sequences}; received {blocks!r}."
        )
    chosen = np.sort(np.random.default_rng(seed).choice(available, blocks, replace=False))
    held_out = np.zeros(len(y_fit), bool)
    non_member = np.zeros(len(y_fit), bool)
    for block in chosen:
        start = block * block_sequences
        held_out[start : start + block_sequences] = True
        non_member[start + gap : start + block_sequences - gap] = True
    return x_fit[~held_out], y_fit[~held_out], x_fit[non_member], y_fit[non_member]


def public_feature_scaling(seed: int = PUBLIC_REFERENCE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (6 each) of a public synthetic subject's windows.

    Scaling with these costs no privacy, unlike the training subject's own statistics. The six
    features span scales from 0.3 (skin temperature) to 30 (acceleration) units.
    """
    x_train = wearable_data.heart_rate_arrays(wearable_data.synthetic_ppg_subject(seed=seed))[0]
    windows = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64)
    return windows.mean(axis=0), windows.std(axis=0)


def load_subject(data_dir: str | None, subject: str, seed: int) -> tuple[dict[str, Any], str]:
    """The real subject from `data_dir` if given (or `PPG_DALIA_DIR`), else the synthetic one."""
    data_dir = data_dir or os.environ.get("PPG_DALIA_DIR")
    if data_dir:
        path = Path(data_dir) / f"{subject}.pkl"
        return wearable_data.load_ppg_dalia_subject(path), f"PPG-DaLiA {subject} ({path})"
    return wearable_data.synthetic_ppg_subject(seed=seed), f"synthetic subject (seed {seed})"


def prepared_arrays(
    subject: dict[str, Any], scaling: tuple[np.ndarray, np.ndarray] | None, seed: int = 0
) -> Arrays:
    """A subject's `Arrays`, features scaled if given, non-members drawn with `seed`."""
    x_train, y_train, x_test, y_test = wearable_data.heart_rate_arrays(subject)
    if scaling is not None:
        mean, std = scaling
        x_train = ((x_train - mean) / std).astype(np.float32)
        x_test = ((x_test - mean) / std).astype(np.float32)
    x_fit, y_fit, x_val, y_val = split_validation(x_train, y_train)
    x_fit, y_fit, x_non_member, y_non_member = split_non_members(x_fit, y_fit, seed)
    return x_fit, y_fit, x_val, y_val, x_test, y_test, x_non_member, y_non_member


def training_mean_baseline(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """MAE (bpm) on the test part of always predicting the mean training heart rate."""
    return float(np.mean(np.abs(y_test - np.mean(y_train))))


def prepare_data(
    seeds: list[int], data_dir: str | None = None, subject: str = "S1", scaled: bool = True
) -> DemoData:
    """Each seed's subject as arrays, with the training-mean baseline and a source line.

    Args:
        seeds: Seeds of the synthetic subjects (ignored for the data when a real subject is
            read, which every seed then shares).
        data_dir: Folder of PPG-DaLiA ``S*.pkl``; None reads ``PPG_DALIA_DIR``, else synthetic.
        subject: The real subject's name, e.g. ``"S1"``.
        scaled: Whether to scale features with a public synthetic subject's statistics.
    """
    scaling = public_feature_scaling() if scaled else None
    arrays_by_seed, sources, baselines = {}, [], []
    for seed in seeds:
        loaded, source = load_subject(data_dir, subject, seed)
        arrays_by_seed[seed] = prepared_arrays(loaded, scaling, seed)
        y_fit, y_test = arrays_by_seed[seed][1], arrays_by_seed[seed][5]
        baselines.append(training_mean_baseline(y_fit, y_test))
        sources.append(source)
    return DemoData(arrays_by_seed, sources, baselines, scaling)


def public_tuning_arrays(
    seeds: tuple[int, ...], scaling: tuple[np.ndarray, np.ndarray] | None
) -> dict[int, Arrays]:
    """Arrays of the public synthetic subjects the recipes are tuned on."""
    return {
        seed: prepared_arrays(wearable_data.synthetic_ppg_subject(seed=seed), scaling, seed)
        for seed in seeds
    }
