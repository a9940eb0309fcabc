"""User-level DP-SGD under MultiWorkerMirroredStrategy, each worker sampling its own shard of
users (`distributed_poisson_batches`); saves the weight update and the ledger.

Run by test_distribute.py in fresh processes (TF_CONFIG must be set before TensorFlow starts):

    python distributed_users.py worker OUT_PREFIX        (TF_CONFIG set by the caller)
    python distributed_users.py expected OUT_PREFIX M    (the same steps computed by hand, with
                                                          M users per worker's batch)

Every user is sampled (rate 1) with all their examples, so the batches are known and the update
can be computed without the library's step: each user's gradient (the mean loss over their
block of rows) clipped to C, summed over users, divided by the global batch's user blocks.
"""

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

WORKERS = 2
USERS = 40
EXAMPLES_PER_USER = 8  # every user's examples
STEPS = 2
L2_NORM_CLIP = 0.3
LEARNING_RATE = 0.5


def data():
    """40 users ("u0".."u39") with 1 to 8 examples each, in no particular order."""
    rng = np.random.default_rng(5)
    counts = rng.integers(1, EXAMPLES_PER_USER + 1, USERS)
    user_ids = np.repeat([f"u{user}" for user in range(USERS)], counts)
    rng.shuffle(user_ids)
    x = rng.normal(size=(len(user_ids), 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1)) + rng.normal(size=(len(user_ids), 1))).astype("float32")
    return x, y, user_ids


def model(pydp_r, keras):
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pydp_r.NoPrivacyWarning)
        optimizer = pydp_r.DPSGD(L2_NORM_CLIP, 0.0, learning_rate=LEARNING_RATE)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def trained_by_hand(model, x, y, user_ids, users_per_shard: int) -> None:
    """STEPS steps of user-level DP-SGD without noise, written out."""
    for _ in range(STEPS):
        sums = [tf.zeros_like(weight) for weight in model.trainable_weights]
        for user in np.unique(user_ids):
            rows = user_ids == user
            with tf.GradientTape() as tape:
                # A block's loss: the mean over its EXAMPLES_PER_USER rows (padding adds 0).
                squared_errors = tf.reduce_mean((model(x[rows]) - y[rows]) ** 2, axis=1)
                loss = tf.reduce_sum(squared_errors) / EXAMPLES_PER_USER
            gradient = tape.gradient(loss, model.trainable_weights)
            factor = min(1.0, L2_NORM_CLIP / max(float(tf.linalg.global_norm(gradient)), 1e-12))
            sums = [total + factor * part for total, part in zip(sums, gradient, strict=True)]
        for weight, total in zip(model.trainable_weights, sums, strict=True):
            weight.assign_sub(LEARNING_RATE * total / (WORKERS * users_per_shard))


def main(mode: str, out_prefix: str, users_per_shard: int = 0) -> None:
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy()
        if mode == "worker"
        else tf.distribute.get_strategy()
    )
    import keras

    import pydp_r

    keras.utils.set_random_seed(3)
    with strategy.scope():
        dp_model = model(pydp_r, keras)
    before = [w.numpy().copy() for w in dp_model.trainable_weights]
    x, y, user_ids = data()
    record = {"replicas": strategy.num_replicas_in_sync}
    if mode == "worker":
        # Rate 1, and the default max_batch_size (the largest shard's users at rate 1).
        batches = pydp_r.data.distributed_poisson_batches(
            strategy,
            (x, y),
            1.0,
            user_ids=user_ids,
            max_examples_per_user=EXAMPLES_PER_USER,
            steps=STEPS,
        )
        budget = pydp_r.PrivacyBudget(delta=1e-5)
        history = dp_model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[budget])
        record["epsilon"] = history.history["epsilon"]
        record["segments"] = dp_model.optimizer.privacy_ledger.get_config()
        record["iterations"] = int(dp_model.optimizer.iterations.numpy())
    else:
        trained_by_hand(dp_model, x, y, user_ids, users_per_shard)
    update = np.concatenate(
        [(w.numpy() - b).ravel() for w, b in zip(dp_model.trainable_weights, before, strict=True)]
    )
    np.save(f"{out_prefix}.npy", update)
    with open(f"{out_prefix}.json", "w") as file:
        json.dump(record, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
