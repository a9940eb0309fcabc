"""Synthetic PPG-DaLiA subjects, so tests, the demo and the vignette run without the real data.

The real dataset (about 2.5 GB) cannot be downloaded everywhere; ``synthetic_ppg_subject`` returns a
dict with the same keys, shapes, rates and dtypes as ``load_ppg_dalia_subject``, and
``save_ppg_dalia_subject`` writes one as a protocol-2 pickle like the dataset's ``S*.pkl`` files.
``synthetic_ppg_population`` makes many wearers in that layout who differ as people do, the data
that user-level privacy is about.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal as scipy_signal

from pydp_r._checks import check_count, check_real
from pydp_r.data.ppg_dalia import (
    ACTIVITY_RATE_HZ,
    CHEST_RATE_HZ,
    LABEL_PERIOD_SECONDS,
    LABEL_WINDOW_SECONDS,
    WRIST_RATES_HZ,
    normalize_ppg_dalia_subject,
)

__all__ = ["save_ppg_dalia_subject", "synthetic_ppg_population", "synthetic_ppg_subject"]

# The PPG-DaLiA protocol: activity code and nominal duration in seconds, with a transient (code 0)
# between activities and at both ends. Durations are jittered per seed and scaled to fit.
_PROTOCOL_SECONDS: tuple[tuple[int, float], ...] = (
    (1, 600.0),  # sitting
    (2, 300.0),  # stairs
    (3, 300.0),  # table soccer
    (4, 480.0),  # cycling
    (5, 900.0),  # driving
    (6, 1800.0),  # lunch
    (7, 600.0),  # walking
    (8, 1200.0),  # working
)
_TRANSIENT_SECONDS = 337.0

# Per activity code 0..8: heart-rate rise above rest (bpm) and wrist motion intensity (g).
_HEART_RATE_RISE_BPM = np.array([15.0, 0.0, 45.0, 20.0, 40.0, 8.0, 10.0, 32.0, 5.0])
_MOTION_INTENSITY_G = np.array([0.15, 0.02, 0.35, 0.25, 0.22, 0.06, 0.10, 0.40, 0.05])
# Rhythmic activities and their movement rate in Hz (stairs, cycling, walking); 0 = irregular.
_CADENCE_HZ = np.array([0.0, 0.0, 1.6, 0.0, 1.1, 0.0, 0.0, 1.8, 0.0])
# Typical direction of gravity in the wrist frame per activity (arm posture).
_POSTURE = np.array(
    [
        [0.3, -0.6, 0.7],
        [0.1, -0.2, 0.95],
        [-0.8, 0.4, 0.2],
        [0.5, 0.1, 0.8],
        [0.6, -0.3, 0.7],
        [0.7, 0.5, 0.4],
        [0.2, 0.3, 0.9],
        [-0.9, 0.3, 0.1],
        [0.0, -0.1, 1.0],
    ]
)
_OUTDOOR = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0], dtype=bool)

_ACC_COUNTS_PER_G = 64.0  # the E4 reports acceleration in 1/64 g
_PULSE_TRANSIT_SECONDS = 0.22  # ECG R peak to wrist pulse arrival


def _ornstein_uhlenbeck(
    rng: np.random.Generator, size: int, dt: float, tau: float, sd: float
) -> np.ndarray:
    """A stationary Gauss-Markov process with time constant ``tau`` s and standard deviation sd."""
    decay = np.exp(-dt / tau)
    white = rng.standard_normal(size) * sd * np.sqrt(1.0 - decay**2)
    start = rng.standard_normal() * sd
    out, _ = scipy_signal.lfilter([1.0], [1.0, -decay], white, zi=[decay * start])
    return out


def _lag(values: np.ndarray, dt: float, tau: float) -> np.ndarray:
    """First-order lag (time constant ``tau`` s), starting at the first value."""
    decay = np.exp(-dt / tau)
    out, _ = scipy_signal.lfilter([1.0 - decay], [1.0, -decay], values, zi=[decay * values[0]])
    return out


def _wrapped(phase: np.ndarray, centre: float) -> np.ndarray:
    """Signed distance of a cycle phase in [0, 1) from ``centre``, wrapped to [-0.5, 0.5)."""
    return np.mod(phase - centre + 0.5, 1.0) - 0.5


def _ppg_pulse(phase: np.ndarray) -> np.ndarray:
    """One PPG cycle per unit phase: a systolic peak, a dicrotic notch and a diastolic wave."""
    systolic = np.exp(-0.5 * (_wrapped(phase, 0.18) / 0.07) ** 2)
    diastolic = 0.35 * np.exp(-0.5 * (_wrapped(phase, 0.48) / 0.09) ** 2)
    return systolic + diastolic


def _ecg_beat(phase: np.ndarray) -> np.ndarray:
    """One ECG cycle per unit phase in mV, R peak at phase 0: P, Q, R, S and T waves."""
    waves = ((-0.17, 0.025, 0.15), (-0.025, 0.008, -0.15), (0.0, 0.012, 1.2))
    waves += ((0.03, 0.01, -0.25), (0.3, 0.05, 0.35))
    out = np.zeros_like(phase)
    for centre, width, height in waves:
        out += height * np.exp(-0.5 * (_wrapped(phase, centre) / width) ** 2)
    return out


def _schedule(codes: np.ndarray, seconds: np.ndarray, num_samples: int) -> np.ndarray:
    """Activity codes at 4 Hz: ``codes`` in order, durations in proportion to ``seconds``."""
    ends = np.round(np.cumsum(seconds) / seconds.sum() * num_samples).astype(int)
    return np.repeat(codes, np.diff(np.concatenate([[0], ends])))


def _with_transients(
    activities: tuple[tuple[int, float], ...], transient_seconds: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, seconds) of ``activities`` with a transient (code 0) before, between and after."""
    codes, seconds = [0], [0.0]
    for code, duration in activities:
        codes += [code, 0]
        seconds += [duration, 0.0]
    seconds_arr = np.array(seconds)
    seconds_arr[0::2] = transient_seconds
    return np.array(codes), seconds_arr


def _activity_schedule(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Activity codes at 4 Hz following the protocol order, durations jittered and scaled."""
    codes, seconds = _with_transients(_PROTOCOL_SECONDS, _TRANSIENT_SECONDS)
    seconds = seconds * rng.uniform(0.85, 1.15, size=len(seconds))
    return _schedule(codes, seconds, num_samples)


def _lowpass_noise(
    rng: np.random.Generator, shape: tuple[int, ...], rate_hz: float, cutoff_hz: float
) -> np.ndarray:
    """Unit-variance Gaussian noise low-pass filtered below ``cutoff_hz``, along axis 0."""
    b, a = scipy_signal.butter(2, cutoff_hz / (rate_hz / 2.0))
    noise = scipy_signal.lfilter(b, a, rng.standard_normal(shape), axis=0)
    return noise / noise.std(axis=0, keepdims=True)


@dataclass(frozen=True)
class _Wearer:
    """What makes one synthetic person differ from another (see ``synthetic_ppg_population``)."""

    questionnaire: dict[str, Any]
    resting_bpm: float
    fitness_gain: float  # multiplies every activity's heart-rate rise; lower is fitter
    ppg_amplitude: float  # pulse height in BVP units at rest
    perfusion_variability: float  # standard deviation of the slow log-perfusion drift
    baseline_gain: float  # BVP baseline drop per bpm of rise (vasoconstriction)
    eda_level_microsiemens: float
    skin_temperature_celsius: float
    activity_codes: np.ndarray  # the day's activities in order, transients (0) between
    activity_seconds: np.ndarray  # their relative durations


def synthetic_ppg_subject(
    n_labels: int = 4603,
    seed: int = 0,
    *,
    name: str | None = None,
    include_chest: bool = True,
    chest_seconds: float | None = 60.0,
    motion_artifact_scale: float = 1.0,
) -> dict[str, Any]:
    """Simulates one PPG-DaLiA subject with the dataset's layout, rates and dtypes.

    How it is made. The subject follows the PPG-DaLiA protocol (transient 0, sitting 1, stairs 2,
    table soccer 3, cycling 4, driving 5, lunch 6, walking 7, working 8), durations jittered per
    seed and scaled to the recording length. Each activity sets a heart-rate rise above a resting
    rate and a wrist motion intensity; both are multiplied by one slow random effort factor, and the
    heart rate follows its target through a 30 s lag plus slow random drift. The phase of the
    heart rate is integrated to place R peaks (``rpeaks``, ECG) and, 0.22 s later, wrist pulses: a
    two-wave PPG cycle (systolic peak, dicrotic notch, diastolic wave). ``label`` is the mean true
    heart rate over each 8 s window, every 2 s, as in the dataset.

    What survives 2 s averaging (and differs from the real E4). A pulse train averages to a
    constant, so two physiologically motivated effects carry the rate into 2 s means: as the rate
    rises with effort, vasoconstriction lowers the BVP baseline (0.8-1.2 units per bpm, plus a slow
    random drift of about 6 units) and shrinks the pulse amplitude (0.6 % per bpm). The real E4
    BVP is band-pass filtered and its 2 s mean carries much less. Wrist motion (rhythmic at
    stairs, cycling and walking, irregular otherwise) has an impact-like one-sided part, so its
    2 s mean tracks motion intensity, which drives the heart rate; arm posture (the gravity
    direction) differs per activity. Motion also leaks into the BVP (motion artefacts), so the
    PPG's spectral peak gives the rate in calm activities but not while walking. EDA (tonic level
    plus skin conductance responses that become more frequent with effort) and skin temperature
    (cooler outdoors) drift slowly. The walkthrough's convnet on 12 steps of 2 s means reaches a
    test MAE of about 3-4 bpm after 20 epochs (seeds 0 and 1), against 13 and 5.5 bpm for the
    training mean: easier than the real S1 (about 6 bpm). It is a test bed, not a physiological
    model.

    Args:
        n_labels: Number of heart-rate labels, integer >= 1. The recording lasts
            ``2 * (n_labels - 1) + 8`` s; the default 4603 matches subject S1 (9212 s).
        seed: Seed, integer >= 0; the same seed gives the same subject bit for bit.
        name: Value of the ``subject`` entry; default ``f"S{seed}"``.
        include_chest: Whether to simulate the 700 Hz chest signals (ACC, ECG, EMG, EDA, Temp,
            Resp). When False, ``signal["chest"]`` is an empty dict.
        chest_seconds: Seconds of chest signals to simulate from the start, > 0, or None for the
            whole recording (6.4 million samples per channel for 9212 s, slow and about 0.4 GB).
            ``rpeaks`` always covers the whole recording, so later indices point past the end of
            shortened chest signals.
        motion_artifact_scale: Multiplier >= 0 of the motion artefacts added to the BVP
            (0 gives a clean PPG).

    Returns:
        Dict with keys ``signal`` (``wrist``: ``ACC`` (n, 3) at 32 Hz in 1/64 g, ``BVP`` (n, 1) at
        64 Hz, ``EDA`` (n, 1) at 4 Hz in microsiemens, ``TEMP`` (n, 1) at 4 Hz in degrees
        Celsius; ``chest``: 700 Hz ``ACC`` (n, 3) in g, ``ECG``, ``EMG`` (mV), ``EDA``, ``Temp``,
        ``Resp`` (n, 1)), ``label`` ((n_labels,) bpm), ``activity`` ((n, 1) codes at 4 Hz),
        ``questionnaire`` (WEIGHT kg, Gender, AGE years, HEIGHT cm, SKIN type 1-6, SPORT 1-6),
        ``rpeaks`` (int64 indices at 700 Hz) and ``subject``. Signals are float64.

    Raises:
        ValueError: If an argument is outside the range above.
    """
    n_labels = check_count("n_labels", n_labels)
    seed = check_count("seed", seed, minimum=0)
    chest_seconds, motion_artifact_scale = _check_signal_options(
        chest_seconds, motion_artifact_scale
    )
    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a str or None, got {name!r}.")
    return _simulate(
        np.random.default_rng(seed),
        n_labels,
        None,
        name=f"S{seed}" if name is None else name,
        include_chest=include_chest,
        chest_seconds=chest_seconds,
        motion_artifact_scale=motion_artifact_scale,
    )


def _check_signal_options(
    chest_seconds: Any, motion_artifact_scale: Any
) -> tuple[float | None, float]:
    if chest_seconds is not None:
        chest_seconds = check_real(
            "chest_seconds", chest_seconds, "a finite number > 0 or None", _finite_positive
        )
    motion_artifact_scale = check_real(
        "motion_artifact_scale",
        motion_artifact_scale,
        "a finite number >= 0",
        lambda value: np.isfinite(value) and value >= 0,
    )
    return chest_seconds, motion_artifact_scale


def _finite_positive(value: float) -> bool:
    return bool(np.isfinite(value) and value > 0)


def _draw_questionnaire(rng: np.random.Generator) -> dict[str, Any]:
    """The single subject's questionnaire, drawn in the order its seeds have always used."""
    sport = int(rng.integers(1, 7))
    return {
        "WEIGHT": float(np.round(rng.uniform(55.0, 95.0), 1)),
        "Gender": str(rng.choice(["m", "f"])),
        "AGE": int(rng.integers(21, 56)),
        "HEIGHT": float(np.round(rng.uniform(158.0, 195.0))),
        "SKIN": int(rng.integers(1, 7)),
        "SPORT": sport,
    }


def _simulate(
    rng: np.random.Generator,
    n_labels: int,
    wearer: _Wearer | None,
    *,
    name: str,
    include_chest: bool,
    chest_seconds: float | None,
    motion_artifact_scale: float,
) -> dict[str, Any]:
    """One recording of ``wearer``; with None the traits are drawn inline, as
    ``synthetic_ppg_subject`` has drawn them for each seed since it was written (so a seed
    keeps giving the same subject bit for bit)."""
    duration_s = LABEL_PERIOD_SECONDS * (n_labels - 1) + LABEL_WINDOW_SECONDS
    rate_slow, rate_acc, rate_bvp = ACTIVITY_RATE_HZ, WRIST_RATES_HZ["ACC"], WRIST_RATES_HZ["BVP"]
    time_slow = np.arange(duration_s * rate_slow) / rate_slow
    time_acc = np.arange(duration_s * rate_acc) / rate_acc
    time_bvp = np.arange(duration_s * rate_bvp) / rate_bvp

    questionnaire = dict(wearer.questionnaire) if wearer else _draw_questionnaire(rng)
    sport = questionnaire["SPORT"]

    # Activity, effort and heart rate at 4 Hz.
    activity = (
        _schedule(wearer.activity_codes, wearer.activity_seconds, time_slow.size)
        if wearer
        else _activity_schedule(rng, time_slow.size)
    )
    effort = np.exp(_ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 45.0, 0.25))
    resting_bpm = wearer.resting_bpm if wearer else 78.0 - 2.0 * sport + rng.normal(0.0, 3.0)
    fitness_gain = wearer.fitness_gain if wearer else rng.uniform(0.8, 1.2)
    target_bpm = resting_bpm + fitness_gain * _HEART_RATE_RISE_BPM[activity] * effort
    heart_rate_slow = _lag(target_bpm, 1 / rate_slow, 30.0)
    heart_rate_slow += _ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 60.0, 3.0)
    heart_rate_slow = np.clip(heart_rate_slow, 40.0, 195.0)
    intensity_slow = _lag(_MOTION_INTENSITY_G[activity] * effort, 1 / rate_slow, 2.0)

    # Cardiac phase (cycles) at 64 Hz; labels are the mean rate over 8 s windows every 2 s.
    heart_rate_bvp = np.interp(time_bvp, time_slow, heart_rate_slow)
    cardiac_phase = np.cumsum(heart_rate_bvp / 60.0 / rate_bvp)
    cumulative = np.concatenate([[0.0], np.cumsum(heart_rate_bvp)])
    starts = np.arange(n_labels) * LABEL_PERIOD_SECONDS * rate_bvp
    window = LABEL_WINDOW_SECONDS * rate_bvp
    label = (cumulative[starts + window] - cumulative[starts]) / window
    beat_times = np.interp(np.arange(1, int(cardiac_phase[-1]) + 1), cardiac_phase, time_bvp)
    rpeaks = np.round(beat_times * CHEST_RATE_HZ).astype(np.int64)

    # Wrist motion at 32 Hz, in g: rhythmic and irregular parts plus a one-sided impact part.
    activity_acc = activity[np.minimum(time_acc * rate_slow, activity.size - 1).astype(int)]
    intensity_acc = np.interp(time_acc, time_slow, intensity_slow)
    cadence = _CADENCE_HZ[activity_acc] * (
        1.0 + 0.04 * _ornstein_uhlenbeck(rng, time_acc.size, 1 / rate_acc, 20.0, 1.0)
    )
    step_phase = 2 * np.pi * np.cumsum(cadence / rate_acc)
    rhythmic = np.stack(
        [np.sin(step_phase), 0.6 * np.sin(2 * step_phase + 0.8), 0.4 * np.cos(step_phase)], axis=1
    )
    rhythmic *= (cadence > 0)[:, np.newaxis]
    irregular = _lowpass_noise(rng, (time_acc.size, 3), rate_acc, 4.0) * np.array([0.6, 0.5, 0.4])
    motion = intensity_acc[:, np.newaxis] * (rhythmic + irregular)
    impact = 0.5 * np.linalg.norm(motion, axis=1)
    posture_slow = _POSTURE[activity] + 0.15 * _lowpass_noise(
        rng, (time_slow.size, 3), rate_slow, 0.01
    )
    posture_slow /= np.linalg.norm(posture_slow, axis=1, keepdims=True)
    posture = np.stack(
        [np.interp(time_acc, time_slow, posture_slow[:, axis]) for axis in range(3)], axis=1
    )
    acc_g = posture + motion
    acc_g[:, 0] += impact
    # The E4 writes whole counts; they stay float64 as in the dataset.
    acc_wrist = np.round(acc_g * _ACC_COUNTS_PER_G)

    # BVP at 64 Hz: rate-dependent baseline and amplitude, pulses delayed by the transit time.
    pulse_phase = np.interp(time_bvp - _PULSE_TRANSIT_SECONDS, time_bvp, cardiac_phase)
    rise_bpm = heart_rate_bvp - resting_bpm
    baseline_gain = wearer.baseline_gain if wearer else rng.uniform(0.8, 1.2)
    perfusion_sd = wearer.perfusion_variability if wearer else 0.1
    perfusion = np.exp(_ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 300.0, perfusion_sd))
    ppg_amplitude = wearer.ppg_amplitude if wearer else rng.uniform(60.0, 100.0)
    amplitude = ppg_amplitude * np.interp(time_bvp, time_slow, perfusion)
    amplitude *= np.clip(1.0 - 0.006 * rise_bpm, 0.3, 1.3)
    drift = np.interp(
        time_bvp, time_slow, _ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 200.0, 6.0)
    )
    breathing = 3.0 * np.sin(2 * np.pi * 0.25 * time_bvp + rng.uniform(0, 2 * np.pi))
    motion_bvp = np.interp(time_bvp, time_acc, motion[:, 0] + 0.5 * motion[:, 1])
    bvp = amplitude * _ppg_pulse(np.mod(pulse_phase, 1.0)) - baseline_gain * rise_bpm + drift
    bvp += breathing + motion_artifact_scale * 150.0 * motion_bvp
    bvp += rng.normal(0.0, 2.0, size=bvp.size)

    # EDA (microsiemens) and skin temperature (degrees C) at 4 Hz.
    arousal = _lag(intensity_slow / 0.4, 1 / rate_slow, 60.0)
    tonic_level = wearer.eda_level_microsiemens if wearer else rng.uniform(0.3, 2.0)
    tonic = tonic_level * np.exp(
        0.4 * arousal + _ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 600.0, 0.2)
    )
    response_rate = (0.01 + 0.08 * intensity_slow / 0.4) / rate_slow  # per sample
    impulses = (rng.random(time_slow.size) < response_rate) * rng.exponential(0.15, time_slow.size)
    rise, fall = np.exp(-1 / (rate_slow * 0.75)), np.exp(-1 / (rate_slow * 4.0))
    phasic = scipy_signal.lfilter([1.0], [1.0, -fall], impulses) - scipy_signal.lfilter(
        [1.0], [1.0, -rise], impulses
    )
    eda = np.maximum(tonic + phasic + rng.normal(0.0, 0.005, time_slow.size), 0.01)
    skin_celsius = wearer.skin_temperature_celsius if wearer else rng.uniform(32.0, 34.5)
    temperature_target = skin_celsius - 1.5 * _OUTDOOR[activity]
    temperature = _lag(temperature_target, 1 / rate_slow, 400.0)
    temperature += _ornstein_uhlenbeck(rng, time_slow.size, 1 / rate_slow, 120.0, 0.1)
    temperature += rng.normal(0.0, 0.02, time_slow.size)

    chest: dict[str, np.ndarray] = {}
    if include_chest:
        chest_duration = duration_s if chest_seconds is None else min(chest_seconds, duration_s)
        time_chest = np.arange(int(round(chest_duration * CHEST_RATE_HZ))) / CHEST_RATE_HZ
        phase_chest = np.interp(time_chest, time_bvp, cardiac_phase)
        intensity_chest = np.interp(time_chest, time_slow, intensity_slow)
        breathing_rate = 0.25 + 0.15 * np.interp(time_chest, time_slow, arousal)
        breathing_phase = 2 * np.pi * np.cumsum(breathing_rate / CHEST_RATE_HZ)
        motion_chest = np.stack(
            [np.interp(time_chest, time_acc, motion[:, axis]) for axis in range(3)], axis=1
        )
        chest_posture = np.array([0.95, -0.05, -0.3])
        chest_noise = rng.standard_normal((time_chest.size, 3))
        chest = {
            "ACC": chest_posture + 0.5 * motion_chest + 0.005 * chest_noise,
            "ECG": (
                _ecg_beat(np.mod(phase_chest, 1.0))
                + 0.05 * np.sin(breathing_phase)
                + rng.normal(0.0, 0.02, time_chest.size)
            )[:, np.newaxis],
            "EMG": (rng.standard_normal(time_chest.size) * 0.005 * (1 + 10 * intensity_chest))[
                :, np.newaxis
            ],
            "EDA": (1.5 * np.interp(time_chest, time_slow, eda))[:, np.newaxis],
            "Temp": (np.interp(time_chest, time_slow, temperature) + 1.5)[:, np.newaxis],
            "Resp": (2.0 * np.sin(breathing_phase) * (1 + 0.5 * intensity_chest))[:, np.newaxis],
        }

    return {
        "signal": {
            "wrist": {
                "ACC": acc_wrist,
                "BVP": bvp[:, np.newaxis],
                "EDA": eda[:, np.newaxis],
                "TEMP": temperature[:, np.newaxis],
            },
            "chest": chest,
        },
        "label": label,
        "activity": activity.astype(np.float64)[:, np.newaxis],
        "questionnaire": questionnaire,
        "rpeaks": rpeaks,
        "subject": name,
    }


def _draw_wearer(rng: np.random.Generator) -> _Wearer:
    """One person of the population: body, fitness, skin and the day's activities.

    Ranges follow what is typical of adults (resting heart rate about 50-95 bpm, lower for
    people who train; green-light PPG amplitude falls with darker skin, Fitzpatrick type 6
    about half of type 1); the correlations are the ones the heart-rate task can notice.
    """
    gender = str(rng.choice(["m", "f"]))
    sport = int(rng.integers(1, 7))
    skin = int(rng.choice(np.arange(1, 7), p=[0.15, 0.25, 0.25, 0.15, 0.1, 0.1]))
    height = rng.normal(178.0, 7.0) if gender == "m" else rng.normal(165.0, 6.5)
    bmi = float(np.clip(rng.lognormal(np.log(24.5), 0.15), 17.0, 40.0))
    questionnaire = {
        "WEIGHT": float(np.round(bmi * (height / 100.0) ** 2, 1)),
        "Gender": gender,
        "AGE": int(rng.integers(18, 76)),
        "HEIGHT": float(np.round(height)),
        "SKIN": skin,
        "SPORT": sport,
    }
    resting_bpm = 74.0 - 2.5 * (sport - 3.5) + (3.0 if gender == "f" else 0.0)
    resting_bpm = float(np.clip(resting_bpm + rng.normal(0.0, 6.0), 45.0, 100.0))
    fitness_gain = float((1.15 - 0.06 * (sport - 1)) * rng.lognormal(0.0, 0.12))
    ppg_amplitude = float(80.0 * (1.0 - 0.1 * (skin - 1)) * rng.lognormal(0.0, 0.25))
    # A day: some of the protocol's activities, in any order, each for a personal share.
    n_activities = int(rng.integers(2, len(_PROTOCOL_SECONDS) + 1))
    chosen = rng.permutation(len(_PROTOCOL_SECONDS))[:n_activities]
    activities = tuple(
        (_PROTOCOL_SECONDS[index][0], _PROTOCOL_SECONDS[index][1] * rng.lognormal(0.0, 0.5))
        for index in chosen
    )
    transients = _TRANSIENT_SECONDS * rng.uniform(0.2, 1.0, size=n_activities + 1)
    codes, seconds = _with_transients(activities, transients)
    return _Wearer(
        questionnaire=questionnaire,
        resting_bpm=resting_bpm,
        fitness_gain=fitness_gain,
        ppg_amplitude=ppg_amplitude,
        perfusion_variability=float(rng.uniform(0.05, 0.2)),
        baseline_gain=float(rng.uniform(0.6, 1.4)),
        eda_level_microsiemens=float(rng.lognormal(np.log(0.8), 0.6)),
        skin_temperature_celsius=float(rng.uniform(31.5, 35.0)),
        activity_codes=codes,
        activity_seconds=seconds,
    )


def synthetic_ppg_population(
    n_users: int,
    seed: int = 0,
    *,
    n_labels_range: tuple[int, int] = (300, 1800),
    include_chest: bool = False,
    chest_seconds: float | None = 60.0,
    motion_artifact_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Simulates ``n_users`` wearers who differ as people do, each in the PPG-DaLiA layout.

    Each person has their own resting heart rate (lower for those who train, a little higher
    for women), fitness (how far activities raise the heart rate), PPG pulse amplitude (lower
    for darker skin, Fitzpatrick type in ``questionnaire["SKIN"]``) and perfusion variability,
    vasoconstriction, EDA level and skin temperature, a day made of 2 to 8 of the protocol's
    activities in their own order and durations, and a recording length drawn log-uniformly
    from ``n_labels_range``. The questionnaire (gender, age, height, weight from a body-mass
    index, SKIN, SPORT) is the person's. The signals are then made as in
    ``synthetic_ppg_subject``.

    Person ``i`` depends only on ``seed`` and ``i`` (NumPy ``SeedSequence(seed).spawn``): the
    first people of a larger population are the same people. Different seeds give different
    people, and their ids (``subject``, ``"P<seed>-<i>"``) differ too, so populations of
    different seeds can be pooled.

    Cost (measured on one core of a 2024 x86 server, 200 people): without chest signals a
    person takes about 24 ms and 2.3 MB on average (float64, as the dataset) at the default
    lengths (median recording 735 labels, 24.5 minutes), so 1,000 people take about 25 s and
    2.3 GB; a full-length PPG-DaLiA day (4,603 labels) would be about 0.2 s and 11 MB each.
    Shorten ``n_labels_range`` to hold more people at once.

    Args:
        n_users: Number of people, integer >= 1.
        seed: Seed of the population, integer >= 0.
        n_labels_range: ``(shortest, longest)`` recording in heart-rate labels (one per 2 s),
            integers with 1 <= shortest <= longest; default 300-1800 (10 to 60 minutes).
        include_chest: Whether to simulate the 700 Hz chest signals; default False (they are
            what makes ``synthetic_ppg_subject`` slow).
        chest_seconds: As in ``synthetic_ppg_subject``: seconds of chest signals, > 0, or None.
        motion_artifact_scale: Multiplier >= 0 of the motion artefacts in the BVP.

    Returns:
        A list of ``n_users`` subject dicts in the layout of ``synthetic_ppg_subject`` (and
        ``load_ppg_dalia_subject``), person ``i`` at index ``i``, ``subject`` its id.

    Raises:
        ValueError: If an argument is outside the range above.
    """
    n_users = check_count("n_users", n_users)
    seed = check_count("seed", seed, minimum=0)
    shortest, longest = _check_n_labels_range(n_labels_range)
    chest_seconds, motion_artifact_scale = _check_signal_options(
        chest_seconds, motion_artifact_scale
    )
    digits = len(str(n_users - 1))
    people = []
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(n_users)):
        rng = np.random.default_rng(child)
        n_labels = int(np.round(np.exp(rng.uniform(np.log(shortest), np.log(longest)))))
        people.append(
            _simulate(
                rng,
                n_labels,
                _draw_wearer(rng),
                name=f"P{seed}-{index:0{digits}d}",
                include_chest=include_chest,
                chest_seconds=chest_seconds,
                motion_artifact_scale=motion_artifact_scale,
            )
        )
    return people


def _check_n_labels_range(n_labels_range: Any) -> tuple[int, int]:
    try:
        shortest, longest = n_labels_range
    except (TypeError, ValueError):
        raise ValueError(
            f"n_labels_range must be a pair (shortest, longest) of integers; received "
            f"{n_labels_range!r}."
        ) from None
    shortest = check_count("n_labels_range[0]", shortest)
    longest = check_count("n_labels_range[1]", longest, minimum=shortest)
    return shortest, longest


def _to_bytes_keys(value: Any) -> Any:
    """Turns dict keys and str values into latin-1 bytes, as Python 2 pickles read as bytes give."""
    if isinstance(value, Mapping):
        return {_to_bytes_keys(key): _to_bytes_keys(item) for key, item in value.items()}
    if isinstance(value, str):
        return value.encode("latin1")
    return value


def save_ppg_dalia_subject(
    subject: Mapping, path: str | os.PathLike, bytes_keys: bool = False
) -> None:
    """Writes a subject dict as a protocol-2 pickle, readable by ``load_ppg_dalia_subject``.

    Args:
        subject: Subject dict in the PPG-DaLiA layout (from ``synthetic_ppg_subject`` or the
            loader); it is checked first.
        path: Destination file (its folder must exist); an existing file is replaced.
        bytes_keys: If True, dict keys and string values are written as bytes, as Python 2
            files look when unpickled with ``encoding="bytes"`` (for testing the loader).

    Raises:
        PPGDaliaFormatError: (a ValueError) If ``subject`` lacks part of the layout.
        FileNotFoundError: If the folder of ``path`` does not exist.
    """
    checked = normalize_ppg_dalia_subject(subject)
    payload = _to_bytes_keys(checked) if bytes_keys else checked
    with open(os.fspath(path), "wb") as file:
        pickle.dump(payload, file, protocol=2)
