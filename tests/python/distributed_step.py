"""One DP-SGD fit() step under a tf.distribute strategy; prints the weight update as JSON.

Run by test_distribute.py in fresh processes (logical devices and TF_CONFIG must be set
before TensorFlow starts):

    python distributed_step.py mirrored NOISE_MULTIPLIER OUT.npy
    python distributed_step.py worker NOISE_MULTIPLIER OUT.npy   (TF_CONFIG set by the caller)
    python distributed_step.py single NOISE_MULTIPLIER OUT.npy
"""

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 8
L2_NORM_CLIP = 0.5
LEARNING_RATE = 1.0


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH, 300)).astype("float32")
    y = (rng.normal(size=(GLOBAL_BATCH, 1)) * np.linspace(0.1, 10, GLOBAL_BATCH)[:, None]).astype(
        "float32"
    )
    return x, y


def main(mode: str, noise_multiplier: float, out_path: str) -> None:
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()

    import keras

    import pydp_r

    keras.utils.set_random_seed(3)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((300,)), keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(1)]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
            optimizer = pydp_r.DPSGD(L2_NORM_CLIP, noise_multiplier, learning_rate=LEARNING_RATE)
        model.compile(optimizer=optimizer, loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=1, verbose=0)
    update = np.concatenate(
        [(w.numpy() - b).ravel() for w, b in zip(model.trainable_weights, before, strict=True)]
    )
    np.save(out_path, update)
    print(f"replicas={strategy.num_replicas_in_sync}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
