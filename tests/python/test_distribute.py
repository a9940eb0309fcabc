"""DP training under tf.distribute: same update as one device, noise added exactly once.

Each run is a fresh process (logical CPU devices and TF_CONFIG must be set before TensorFlow
starts); the multi-worker case starts two worker processes on 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Statistical, end-to-end or multi-process: the slow tier (`make test-fast` skips it).
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("distributed_step.py")
TIMEOUT_SECONDS = 240
NOISE_MULTIPLIER = 4.0
# Constants of distributed_step.py.
GLOBAL_BATCH, L2_NORM_CLIP, LEARNING_RATE = 8, 0.5, 1.0


def run_step(mode: str, noise_multiplier: float, tmp_path: Path, tag: str) -> np.ndarray:
    out = tmp_path / f"{mode}-{tag}.npy"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(noise_multiplier), str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if mode == "mirrored":
        assert "replicas=2" in result.stdout
    return np.load(out)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_workers(noise_multiplier: float, tmp_path: Path, tag: str) -> list[np.ndarray]:
    outputs = [tmp_path / f"worker{index}-{tag}.npy" for index in range(2)]
    start_two_workers(lambda index: [SCRIPT, "worker", str(noise_multiplier), str(outputs[index])])
    return [np.load(out) for out in outputs]


def start_two_workers(command_of: Callable[[int], list[Any]]) -> None:
    """Run `command_of(index)` (a Python script and its arguments) as two workers of one
    cluster on 127.0.0.1, and wait for both to succeed."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, *map(str, command_of(index))],
                env={**os.environ, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            process.kill()


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("single")
    return run_step("single", 0.0, tmp_path, "noiseless"), run_step(
        "single", NOISE_MULTIPLIER, tmp_path, "noisy"
    )


def expected_noise_std() -> float:
    return LEARNING_RATE * NOISE_MULTIPLIER * L2_NORM_CLIP / GLOBAL_BATCH


def test_single_device_noise_is_calibrated(single_device):
    noiseless, noisy = single_device
    assert np.std(noisy - noiseless) == pytest.approx(expected_noise_std(), rel=0.05)


def test_mirrored_strategy_matches_one_device_and_adds_noise_once(single_device, tmp_path):
    noiseless, _ = single_device
    mirrored = run_step("mirrored", 0.0, tmp_path, "noiseless")
    np.testing.assert_allclose(mirrored, noiseless, rtol=1e-4, atol=1e-6)
    noise = run_step("mirrored", NOISE_MULTIPLIER, tmp_path, "noisy") - noiseless
    # Noise from both replicas would be sqrt(2) too large; none at all would be 0.
    assert np.std(noise) == pytest.approx(expected_noise_std(), rel=0.05)


def test_multi_worker_strategy_matches_one_device_and_adds_noise_once(single_device, tmp_path):
    noiseless, _ = single_device
    updates = run_two_workers(0.0, tmp_path, "noiseless")
    for update in updates:
        np.testing.assert_allclose(update, noiseless, rtol=1e-4, atol=1e-6)
    noisy = run_two_workers(NOISE_MULTIPLIER, tmp_path, "noisy")
    np.testing.assert_allclose(noisy[0], noisy[1], rtol=1e-5, atol=1e-7)  # workers agree
    assert np.std(noisy[0] - noiseless) == pytest.approx(expected_noise_std(), rel=0.05)


USERS_SCRIPT = Path(__file__).with_name("distributed_users.py")


def test_two_workers_each_sampling_their_shard_of_users_train_and_account_as_one(tmp_path):
    """distributed_users.py: every user in every step, so the update is known; it must equal
    user-level DP-SGD written out by hand (each user's block clipped as one, on whichever
    worker holds it), and the ledger must record the users, the shards and every step."""
    start_two_workers(lambda index: [USERS_SCRIPT, "worker", tmp_path / f"users{index}"])
    records = [json.loads((tmp_path / f"users{index}.json").read_text()) for index in range(2)]
    (segment,) = records[0]["segments"]
    # Every user in every step: each worker's batch holds its whole shard.
    assert segment["max_batch_size"] == max(segment["shard_sizes"])
    expected = tmp_path / "expected"
    done = subprocess.run(
        [sys.executable, USERS_SCRIPT, "expected", expected, str(segment["max_batch_size"])],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_hand = np.load(f"{expected}.npy")
    assert np.abs(by_hand).max() > 1e-3  # the steps moved the weights
    for index in range(2):
        np.testing.assert_allclose(
            np.load(tmp_path / f"users{index}.npy"), by_hand, rtol=1e-4, atol=1e-6
        )
        record = records[index]
        assert record["replicas"] == 2
        assert record["epsilon"] == [float("inf")]  # PrivacyBudget ran on both: no noise, no bound
        (segment,) = record["segments"]
        assert segment["unit"] == "user"
        assert segment["n"] == 40
        assert segment["steps"] == record["iterations"] == 2
        assert len(segment["shard_sizes"]) == 2 and sum(segment["shard_sizes"]) == 40
        assert min(segment["shard_sizes"]) >= 1
