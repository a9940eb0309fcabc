"""The privacy ledger and PrivacyBudget in fit(): the epsilon logged is that of what really ran.

Each scenario of the honest-epsilon issue is here: shuffled batches, wrong declarations,
weights-only resumes, BackupAndRestore, interrupted fits, a spent budget after a reload,
truncated Poisson batches, and the ledger file.
"""

import json
import math

import dp_accounting
import keras
import numpy as np
import pytest

import pydp_r
from pydp_r.accounting import compute_epsilon
from pydp_r.callbacks import PrivacyBudget, ShuffledBatchesWarning
from pydp_r.data import poisson_batches

N, BATCH, DELTA = 64, 16, 1e-3

pytestmark = pytest.mark.filterwarnings("ignore::pydp_r.callbacks.ShuffledBatchesWarning")


def data(n=N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def model_with(optimizer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def dp_sgd(noise_multiplier=1.0, **kwargs):
    return pydp_r.DPSGD(
        l2_norm_clip=1.0, noise_multiplier=noise_multiplier, learning_rate=0.05, **kwargs
    )


def gaussian_epsilon(noise_multiplier, compositions, delta=DELTA, accountant="rdp"):
    """Epsilon of `compositions` Gaussian mechanisms without sampling (the shuffled bound)."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), compositions
    )
    if accountant == "rdp":
        composed = dp_accounting.rdp.RdpAccountant()
    else:
        composed = dp_accounting.pld.PLDAccountant()
    return composed.compose(event).get_epsilon(delta)


def test_shuffled_batches_get_the_bound_without_amplification():
    x, y = data()
    model = model_with(dp_sgd(noise_multiplier=1.2))
    budget = PrivacyBudget(delta=DELTA)
    with pytest.warns(ShuffledBatchesWarning, match="poisson_batches"):
        history = model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[budget], verbose=0)
    expected = [gaussian_epsilon(1.2, epochs) for epochs in (1, 2, 3)]
    assert history.history["epsilon"] == pytest.approx(expected, rel=1e-9)
    # Far above the Poisson figure that was printed before for the same run.
    assert expected[-1] > 1.4 * compute_epsilon(N, BATCH, 1.2, 3, DELTA)
    # A second fit() continues the ledger of the same optimizer.
    history = model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert history.history["epsilon"] == pytest.approx([gaussian_epsilon(1.2, 4)], rel=1e-9)
    assert model.optimizer.privacy_ledger.steps == 4 * N // BATCH


def test_declared_sizes_are_checked_against_what_ran():
    # The case: told n=640, batch 16; the run has other sizes.
    x, y = data(640)
    model = model_with(dp_sgd(noise_multiplier=1.0))
    budget = PrivacyBudget(n=1000, batch_size=16, delta=1e-5)
    with pytest.warns(UserWarning, match="batch_size=16"):
        with pytest.warns(UserWarning, match="n=1000"):
            model.fit(x, y, batch_size=128, epochs=3, callbacks=[budget], verbose=0)
    true_poisson = compute_epsilon(640, 128, 1.0, 3, 1e-5)  # 6.70 in the issue
    assert budget.epsilon >= true_poisson
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.0, 3, 1e-5), rel=1e-9)


def test_poisson_batches_get_the_amplified_epsilon_of_the_steps_taken():
    x, y = data(640)
    model = model_with(dp_sgd(noise_multiplier=1.0))
    dataset = poisson_batches((x, y), 50 / 640, max_batch_size=640, seed=1)
    budget = PrivacyBudget(delta=1e-5)
    history = model.fit(dataset, epochs=2, callbacks=[budget], verbose=0)
    steps = model.optimizer.privacy_ledger.steps
    assert steps == 2 * 12 == int(model.optimizer.iterations)
    expected = dp_accounting.rdp.RdpAccountant().compose(
        dp_accounting.PoissonSampledDpEvent(50 / 640, dp_accounting.GaussianDpEvent(1.0)), steps
    )
    assert history.history["epsilon"][-1] == pytest.approx(expected.get_epsilon(1e-5), rel=1e-9)
    assert budget.accountant_used == "rdp"


@pytest.mark.slow  # over 3 s: the full tier
def test_truncated_poisson_batches_are_accounted_exactly():
    x, y = data(640)
    with pytest.raises(ValueError, match="max_batch_size"):
        poisson_batches((x, y), 50 / 640, max_batch_size=45)  # the silent truncation
    model = model_with(dp_sgd(noise_multiplier=1.0))
    dataset = poisson_batches((x, y), 50 / 640, max_batch_size=55, seed=2)
    budget = PrivacyBudget(delta=1e-5)
    model.fit(dataset, epochs=1, callbacks=[budget], verbose=0)
    truncated = dp_accounting.pld.PLDAccountant().compose(
        dp_accounting.TruncatedSubsampledGaussianDpEvent(640, 50 / 640, 55, 1.0), 12
    )
    assert budget.accountant_used == "pld"
    assert budget.epsilon >= truncated.get_epsilon(1e-5) - 1e-6
    assert budget.epsilon == pytest.approx(truncated.get_epsilon(1e-5), rel=1e-3)


def test_weights_only_resume_counts_the_epochs_it_did_not_see(tmp_path):
    x, y = data()
    path = str(tmp_path / "model.weights.h5")
    model = model_with(dp_sgd(noise_multiplier=1.0))
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[checkpoint], verbose=0)
    fresh = model_with(dp_sgd(noise_multiplier=1.0))
    fresh.load_weights(path)
    budget = PrivacyBudget(delta=DELTA)
    with pytest.warns(UserWarning, match="missing epochs"):
        fresh.fit(x, y, batch_size=BATCH, epochs=6, initial_epoch=3, callbacks=[budget], verbose=0)
    assert budget.epsilon >= gaussian_epsilon(1.0, 6) * (1 - 1e-9)


def test_backup_and_restore_resume_keeps_the_count(tmp_path):
    x, y = data()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = model_with(dp_sgd(noise_multiplier=1.0))
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=BATCH, epochs=4, callbacks=[backup, Interrupt()], verbose=0)
    fresh = model_with(dp_sgd(noise_multiplier=1.0))
    budget = PrivacyBudget(delta=DELTA)
    with pytest.warns(UserWarning, match="missing epochs"):
        fresh.fit(x, y, batch_size=BATCH, epochs=4, callbacks=[backup, budget], verbose=0)
    assert budget.epsilon >= gaussian_epsilon(1.0, 4) * (1 - 1e-9)
    # Each restored step counted once, in a new optimizer (no double count of the restore).
    ledger = fresh.optimizer.privacy_ledger
    assert ledger.steps == int(fresh.optimizer.iterations) == 4 * N // BATCH
    assert ledger.passes == 4


def test_an_interrupted_fit_records_its_partial_epoch():
    x, y = data()

    class StopMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    model = model_with(dp_sgd())
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[StopMidEpoch()], verbose=0)
    ledger = model.optimizer.privacy_ledger
    assert ledger.steps == int(model.optimizer.iterations) == 2
    assert ledger.passes == 1


def test_ledger_survives_keras_save_and_a_spent_budget_stays_spent(tmp_path):
    x, y = data()
    model = model_with(dp_sgd(noise_multiplier=1.0))
    target = gaussian_epsilon(1.0, 2) * 1.01  # two epochs fit, a third does not
    budget = PrivacyBudget(delta=DELTA, target_epsilon=target)
    history = model.fit(x, y, batch_size=BATCH, epochs=10, callbacks=[budget], verbose=0)
    assert len(history.history["epsilon"]) == 2
    assert max(history.history["epsilon"]) <= target
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.optimizer.privacy_ledger.steps == model.optimizer.privacy_ledger.steps
    steps_before = int(reloaded.optimizer.iterations)
    with pytest.raises(ValueError, match="already spent"):
        reloaded.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=1,
            callbacks=[PrivacyBudget(delta=DELTA, target_epsilon=target)],
            verbose=0,
        )
    assert int(reloaded.optimizer.iterations) == steps_before


def test_poisson_budget_stops_at_the_last_step_within_it():
    x, y = data(640)
    model = model_with(dp_sgd(noise_multiplier=1.0))
    dataset = poisson_batches((x, y), 50 / 640, max_batch_size=640, seed=3)

    def epsilon_after(steps):
        return (
            dp_accounting.rdp.RdpAccountant()
            .compose(
                dp_accounting.PoissonSampledDpEvent(50 / 640, dp_accounting.GaussianDpEvent(1.0)),
                steps,
            )
            .get_epsilon(1e-5)
        )

    target = (epsilon_after(17) + epsilon_after(18)) / 2
    budget = PrivacyBudget(delta=1e-5, target_epsilon=target)
    model.fit(dataset, epochs=5, callbacks=[budget], verbose=0)
    assert model.optimizer.privacy_ledger.steps == int(model.optimizer.iterations) == 17


def test_ledger_file_is_append_only_and_restores_a_forgotten_budget(tmp_path):
    x, y = data()
    path = tmp_path / "ledger.jsonl"
    model = model_with(dp_sgd(noise_multiplier=1.0))
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        callbacks=[PrivacyBudget(delta=DELTA, ledger_path=path)],
        verbose=0,
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[-1])
    assert record["noisy_steps"] == 2 * N // BATCH and "shuffled" in record["summary"]
    # A fresh optimizer (weights-only restore, new process) learns the spent budget from the file.
    fresh = model_with(dp_sgd(noise_multiplier=1.0))
    budget = PrivacyBudget(delta=DELTA, ledger_path=path)
    fresh.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.0, 3), rel=1e-9)
    assert path.read_text().splitlines()[:2] == lines


def test_microbatching_and_gradient_accumulation_are_accounted():
    x, y = data()
    # Microbatches of 2 examples: sensitivity doubled, i.e. half the noise multiplier.
    model = model_with(dp_sgd(noise_multiplier=2.0, num_microbatches=8))
    budget = PrivacyBudget(delta=DELTA)
    model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[budget], verbose=0)
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.0, 2), rel=1e-9)
    # Accumulating 3 batches of 4 steps per epoch straddles epochs: each straddle costs 2 more.
    model = model_with(dp_sgd(noise_multiplier=1.0, gradient_accumulation_steps=3))
    budget = PrivacyBudget(delta=DELTA)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert model.optimizer.privacy_ledger.steps == 1
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.0, 3), rel=1e-9)


def test_poisson_batches_with_gradient_accumulation_are_refused():
    x, y = data(640)
    model = model_with(dp_sgd(gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        model.fit(poisson_batches((x, y), 0.1, seed=0), epochs=1, verbose=0)


def test_no_noise_gives_infinite_epsilon():
    x, y = data()
    with pytest.warns(pydp_r.NoPrivacyWarning):
        model = model_with(dp_sgd(noise_multiplier=0.0))
    budget = PrivacyBudget(delta=DELTA)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert math.isinf(budget.epsilon)


def test_model_without_dp_optimizer_is_refused():
    x, y = data()
    model = model_with(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="DP optimizer"):
        model.fit(x, y, epochs=1, callbacks=[PrivacyBudget(delta=DELTA)], verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be"),
        ({"batch_size": 1.5}, "batch_size must be"),
        ({"n": 10, "batch_size": 11}, "batch_size must be"),
        ({"delta": 1.0}, "delta must be"),
        ({"target_epsilon": 0}, "target_epsilon must be"),
        ({"accountant": "moments"}, "accountant must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrivacyBudget(**kwargs)


# --- Workflows that used to take privacy off the books (issue #26) ---


def test_a_ledger_file_from_another_run_adds_to_the_model_ledger_never_replaces_it(tmp_path):
    x, y = data(200)
    model = model_with(dp_sgd(noise_multiplier=1.1))
    model.fit(x, y, batch_size=20, epochs=3, verbose=0)
    own = model.optimizer.privacy_ledger.epsilon(1e-5)
    other = model_with(dp_sgd(noise_multiplier=1.1))
    path = tmp_path / "ledger.jsonl"
    budget = PrivacyBudget(delta=1e-5, ledger_path=path)
    other.fit(poisson_batches((x, y), 0.1, seed=0), epochs=2, callbacks=[budget], verbose=0)
    assert other.optimizer.privacy_ledger.steps == 20
    budget = PrivacyBudget(delta=1e-5, ledger_path=path)
    model.fit(poisson_batches((x, y), 0.1, seed=1), epochs=1, callbacks=[budget], verbose=0)
    # The model's own 3 passes, the other run's 20 steps and this fit's 10 steps, composed.
    assert model.optimizer.privacy_ledger.steps == 30 + 20 + 10
    assert budget.epsilon > own


@pytest.mark.parametrize(
    "transform",
    [
        lambda d: d.prefetch(2),
        lambda d: d.map(lambda x, y, w: (x, y, w)),
        lambda d: d.with_options(__import__("tensorflow").data.Options()),
        lambda d: d.repeat(2),
    ],
)
def test_operations_that_keep_poisson_batches_are_accepted(transform):
    x, y = data(200)
    model = model_with(dp_sgd())
    dataset = transform(poisson_batches((x, y), 0.1, seed=0))
    budget = PrivacyBudget(delta=1e-5)
    model.fit(dataset, epochs=1, callbacks=[budget], verbose=0)
    segment = model.optimizer.privacy_ledger.segments[-1]
    assert segment.sampling == "poisson"
    assert segment.steps == int(model.optimizer.iterations) > 0


@pytest.mark.parametrize(
    "transform, name",
    [
        (lambda d: d.cache(), "Cache: cache replays"),
        (lambda d: d.shuffle(4), "Shuffle"),
        (lambda d: d.unbatch().batch(10), "Batch, Unbatch"),
        (lambda d: d.rebatch(5), "Rebatch"),
        (lambda d: d.filter(lambda x, y, w: True), "Filter"),
    ],
)
def test_operations_that_change_poisson_batches_are_refused_before_any_step(transform, name):
    x, y = data(200)
    model = model_with(dp_sgd())
    with pytest.raises(ValueError, match=name):
        model.fit(transform(poisson_batches((x, y), 0.1, seed=0)), epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_a_repeated_dataset_counts_every_pass_it_makes():
    import tensorflow as tf

    x, y = data(200)
    model = model_with(dp_sgd(noise_multiplier=1.1))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(20).repeat(3)
    budget = PrivacyBudget(delta=1e-5)
    model.fit(dataset, epochs=1, callbacks=[budget], verbose=0)
    assert model.optimizer.privacy_ledger.passes == 3
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.1, 3, 1e-5), rel=1e-9)
    # Zipped inputs are paired one to one: the same count.
    model = model_with(dp_sgd(noise_multiplier=1.1))
    zipped = tf.data.Dataset.zip(
        tf.data.Dataset.from_tensor_slices(x), tf.data.Dataset.from_tensor_slices(y)
    )
    model.fit(zipped.shuffle(50).batch(20).repeat(2), epochs=1, verbose=0)
    assert model.optimizer.privacy_ledger.passes == 2


def test_a_dataset_that_may_duplicate_examples_counts_every_step_as_a_pass():
    import tensorflow as tf

    x, y = data(200)
    model = model_with(dp_sgd(noise_multiplier=1.1))
    half = tf.data.Dataset.from_tensor_slices((x[:100], y[:100]))
    model.fit(half.concatenate(half).batch(20), epochs=1, verbose=0)  # each example twice
    ledger = model.optimizer.privacy_ledger
    assert ledger.steps == 10 and ledger.passes == 10


def test_repeating_examples_before_batching_is_refused_before_any_step():
    import tensorflow as tf

    x, y = data(200)
    model = model_with(dp_sgd())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat(2).shuffle(50).batch(20)
    with pytest.raises(ValueError, match=r"batch\(\.\.\.\)\.repeat\(\)"):
        model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_poisson_batches_zipped_with_another_dataset_are_refused():
    import tensorflow as tf

    x, y = data(200)
    model = model_with(dp_sgd())
    batches = poisson_batches((x, y), 0.1, seed=0)
    zipped = tf.data.Dataset.zip(batches, batches).map(lambda a, b: a)
    with pytest.raises(ValueError, match="Zip"):
        model.fit(zipped, epochs=1, verbose=0)


def test_a_checkpoint_saved_mid_epoch_carries_every_step_it_took(tmp_path):
    x, y = data(200)
    path = str(tmp_path / "mid.keras")
    model = model_with(dp_sgd())
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq=25)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[checkpoint], verbose=0)
    reloaded = keras.models.load_model(path)
    assert int(reloaded.optimizer.iterations) == 25
    assert reloaded.optimizer.privacy_ledger.steps == 25


def test_steps_per_execution_cannot_run_past_the_budget():
    x, y = data(640)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=dp_sgd(noise_multiplier=1.0), loss="mse", steps_per_execution=10)
    dataset = poisson_batches((x, y), 50 / 640, max_batch_size=640, seed=3)
    model.fit(dataset, epochs=1, verbose=0)  # 12 steps
    two_more = model.optimizer.privacy_ledger.epsilon(
        1e-5,
        extra=model.optimizer.privacy_ledger.segments[-1].__class__(
            **{**model.optimizer.privacy_ledger.segments[-1].__dict__, "steps": 2}
        ),
    )
    budget = PrivacyBudget(delta=1e-5, target_epsilon=two_more * 1.0001)
    with pytest.raises(ValueError, match="steps_per_execution=10"):
        model.fit(dataset, epochs=1, callbacks=[budget], verbose=0)
    assert int(model.optimizer.iterations) == 12


def test_an_edited_ledger_in_a_keras_file_is_caught_by_its_iterations(tmp_path):
    import zipfile

    x, y = data()
    model = model_with(dp_sgd())
    model.fit(x, y, batch_size=BATCH, epochs=5, verbose=0)  # 20 steps
    path = tmp_path / "model.keras"
    model.save(path)
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                config["compile_config"]["optimizer"]["config"]["privacy_ledger"][0]["steps"] = 1
                content = json.dumps(config).encode()
            target.writestr(item, content)
    with pytest.warns(pydp_r.optimizers.LedgerMismatchWarning, match="taken 20"):
        reloaded = keras.models.load_model(tampered)
        assert reloaded.optimizer.privacy_ledger.steps >= 20


def test_a_resumed_run_finds_its_own_steps_in_the_ledger_file_and_counts_them_once(tmp_path):
    x, y = data()
    ledger_path = tmp_path / "ledger.jsonl"
    weights = str(tmp_path / "model.weights.h5")
    model = model_with(dp_sgd(noise_multiplier=1.0))
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        callbacks=[PrivacyBudget(delta=DELTA, ledger_path=ledger_path)],
        verbose=0,
    )
    model.save_weights(weights)
    fresh = model_with(dp_sgd(noise_multiplier=1.0))
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(weights)  # iterations 8, lineage of the first run
    budget = PrivacyBudget(delta=DELTA, ledger_path=ledger_path)
    fresh.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[budget], verbose=0)
    assert fresh.optimizer.privacy_ledger.passes == 3
    assert budget.epsilon == pytest.approx(gaussian_epsilon(1.0, 3), rel=1e-9)


def test_a_bad_ledger_path_is_refused_before_any_step(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        PrivacyBudget(ledger_path=tmp_path / "missing" / "ledger.jsonl")
    with pytest.raises(ValueError, match="non-empty"):
        PrivacyBudget(ledger_path="")


def test_non_finite_examples_are_counted_in_the_logs():
    x, y = data()
    x[3, 1] = np.nan
    model = model_with(dp_sgd())
    with pytest.warns(pydp_r.callbacks.NonFiniteExamplesWarning, match="1 examples"):
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    assert history.history["non_finite_examples"] == [1, 1]  # the same example, each epoch
    assert all(np.isfinite(w).all() for w in model.get_weights())


_KILLED_RUN = """
import os, signal, sys
import numpy as np, keras, pydp_r
from pydp_r.callbacks import PrivacyBudget

class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == 45:
            os.kill(os.getpid(), signal.SIGKILL)

folder = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 3)).astype("float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile(optimizer=pydp_r.DPSGD(1.0, 1.0, learning_rate=0.05), loss="mse")
model.fit(x, x.sum(axis=1), batch_size=8, epochs=3, verbose=0, callbacks=[
    keras.callbacks.ModelCheckpoint(folder + "/mid.keras", save_freq=10),
    PrivacyBudget(delta=1e-5, ledger_path=folder + "/ledger.jsonl"), KillAt()])
"""


@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_from_its_checkpoint_counts_every_step(tmp_path):
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path)], capture_output=True, timeout=300
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    resumed = keras.models.load_model(tmp_path / "mid.keras")
    assert int(resumed.optimizer.iterations) == 40
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype("float32")
    budget = PrivacyBudget(delta=1e-5, ledger_path=tmp_path / "ledger.jsonl")
    resumed.fit(x, x.sum(axis=1), batch_size=8, epochs=1, callbacks=[budget], verbose=0)
    assert resumed.optimizer.privacy_ledger.steps == int(resumed.optimizer.iterations) == 65


@pytest.mark.slow
def test_load_model_finds_the_dp_optimizer_after_only_import_pydp_r(tmp_path):
    import subprocess
    import sys

    model = model_with(dp_sgd())
    model.save(tmp_path / "model.keras")
    script = (
        "import pydp_r, keras, sys\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "print(type(model.optimizer).__name__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras")],
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert run.stdout.decode().strip() == "DPSGD"
