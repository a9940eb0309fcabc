"""DP training under tf.distribute: same update as one device, noise added exactly once.

Each run is a fresh process (logical CPU devices and TF_CONFIG must be set before TensorFlow
starts); the multi-worker case starts two worker processes on 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes, outputs = [], []
    for index in range(2):
        out = tmp_path / f"worker{index}-{tag}.npy"
        outputs.append(out)
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), "worker", str(noise_multiplier), str(out)],
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
    return [np.load(out) for out in outputs]


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
