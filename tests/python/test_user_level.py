"""User-level DP: Poisson batches of users, each user's examples clipped as one, accounted per
user. Each test would fail if a user could weigh more than one clipped unit, or if the ledger
counted examples where users ran."""

import types

import dp_accounting
import keras
import numpy as np
import pytest
import tensorflow as tf

import pydp_r
from pydp_r.callbacks import PrivacyBudget
from pydp_r.data import poisson_batches


def population(num_users=12, seed=0):
    """Users with 1 to 9 examples each, ids as strings in shuffled order."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 10, size=num_users)
    ids = np.repeat([f"user{i}" for i in range(num_users)], counts)
    order = rng.permutation(len(ids))
    x = rng.normal(size=(len(ids), 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) * 3).astype("float32")
    return x[order], y[order], ids[order]


def test_each_batch_holds_whole_blocks_of_one_sampled_user():
    x, y, ids = population()
    dataset = poisson_batches(
        (x, y), 0.5, user_ids=ids, max_examples_per_user=4, max_batch_size=12, seed=1
    )
    sampling = dataset.pydp_r_poisson_sampling
    assert (sampling.unit, sampling.n, sampling.examples_per_unit) == ("user", 12, 4)
    row_of = {tuple(row): i for i, row in enumerate(x)}
    seen_users = []
    for batch_x, _, weights in dataset.repeat(20):  # 40 batches
        batch_x, weights = batch_x.numpy(), weights.numpy()
        assert batch_x.shape == (48, 3)
        users_here = []
        for block in range(12):
            rows = range(4 * block, 4 * block + 4)
            real = [r for r in rows if weights[r] > 0]
            owners = {ids[row_of[tuple(batch_x[r])]] for r in real}
            assert len(owners) <= 1  # a block is one user's
            if owners:
                (owner,) = owners
                assert len(real) == min(4, int(np.sum(ids == owner)))
                assert len({tuple(batch_x[r]) for r in real}) == len(real)  # no repeats
                users_here.append(owner)
            assert all(not batch_x[r].any() for r in rows if weights[r] == 0)
        assert len(users_here) == len(set(users_here))  # a user at most once per step
        seen_users.extend(users_here)
    # Users join at rate 0.5: 40 batches x 12 users x 0.5 = 240 on average (sd 11).
    assert 190 < len(seen_users) < 290


def test_user_level_arguments_are_checked():
    x, y, ids = population()
    with pytest.raises(ValueError, match="max_examples_per_user is required"):
        poisson_batches((x, y), 0.5, user_ids=ids)
    with pytest.raises(ValueError, match="user_ids must have shape"):
        poisson_batches((x, y), 0.5, user_ids=ids[:-1], max_examples_per_user=2)
    with pytest.raises(ValueError, match="max_batch_size counts users"):
        poisson_batches((x, y), 0.5, user_ids=ids, max_examples_per_user=2, max_batch_size=13)
    with pytest.raises(ValueError, match="give user_ids as well"):
        poisson_batches((x, y), 0.5, max_examples_per_user=2)


def model_with(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, "tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_the_step_clips_each_users_block_as_one_unit():
    import tensorflow as tf

    x, y, ids = population()
    # Rate 1 and k = 9 (every user's count): each iteration draws the same blocks, in
    # another order within each block, so the batch fit() draws sums like this one.
    dataset = poisson_batches(
        (x, y), 1.0, user_ids=ids, max_examples_per_user=9, max_batch_size=12, seed=2, steps=1
    )
    ((batch_x, batch_y, weights),) = list(dataset)
    with pytest.warns(pydp_r.NoPrivacyWarning):
        optimizer = pydp_r.DPSGD(0.5, 0.0, learning_rate=1.0)
    model = model_with(optimizer)
    reference = model_with(keras.optimizers.SGD())
    reference.set_weights(model.get_weights())
    before = [w.numpy().copy() for w in model.trainable_variables]
    model.fit(dataset, epochs=1, verbose=0)
    update = [w.numpy() - b for w, b in zip(model.trainable_variables, before, strict=True)]
    # Reference: per block, the gradient of the block's mean weighted loss, clipped to 0.5.
    total = [np.zeros_like(b) for b in before]
    for block in range(12):
        rows = slice(9 * block, 9 * block + 9)
        with tf.GradientTape() as tape:
            errors = tf.square(reference(batch_x[rows]) - batch_y[rows])[:, 0]
            loss = tf.reduce_sum(errors * weights[rows]) / 9
        grads = [g.numpy() for g in tape.gradient(loss, reference.trainable_variables)]
        norm = np.sqrt(sum(float(np.sum(g**2)) for g in grads))
        factor = min(1.0, 0.5 / max(norm, 1e-12))
        total = [t + factor * g for t, g in zip(total, grads, strict=True)]
    for got, want in zip(update, total, strict=True):
        np.testing.assert_allclose(got, -want / 12, rtol=1e-4, atol=1e-6)


def test_the_ledger_accounts_users_and_says_so():
    x, y, ids = population(40)
    dataset = poisson_batches((x, y), 0.25, user_ids=ids, max_examples_per_user=2, seed=3)
    model = model_with(pydp_r.DPSGD(1.0, 1.2))
    budget = PrivacyBudget(delta=1e-3)
    model.fit(dataset, epochs=2, callbacks=[budget], verbose=0)
    ledger = model.optimizer.privacy_ledger
    segment = ledger.segments[-1]
    assert (ledger.unit, segment.unit, segment.n, segment.steps) == ("user", "user", 40, 8)
    assert "users" in ledger.describe() and "clipped per user" in ledger.describe()
    if segment.truncated:
        event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
            40, 0.25, segment.max_batch_size, 1.2
        )
        accountant = dp_accounting.pld.PLDAccountant()
    else:
        event = dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.2))
        accountant = dp_accounting.rdp.RdpAccountant()
    expected = accountant.compose(event, 8).get_epsilon(1e-3)
    assert budget.epsilon >= expected - 1e-6
    assert budget.epsilon == pytest.approx(expected, rel=1e-3)


def test_user_level_batches_refuse_microbatches_of_their_own():
    x, y, ids = population()
    dataset = poisson_batches((x, y), 0.5, user_ids=ids, max_examples_per_user=2, seed=4)
    model = model_with(pydp_r.DPSGD(1.0, 1.0, num_microbatches=2))
    with pytest.raises(ValueError, match="num_microbatches=2 cannot be combined"):
        model.fit(dataset, epochs=1, verbose=0)


def test_example_level_batches_of_named_users_warn_and_give_the_group_bound():
    from pydp_r.data.sampling import ExampleLevelWarning

    x, y, ids = population(40)
    with pytest.warns(ExampleLevelWarning, match="privacy_unit='user'"):
        dataset = poisson_batches(
            (x, y), 0.1, user_ids=ids, max_examples_per_user=3, privacy_unit="example", seed=5
        )
    sampling = dataset.pydp_r_poisson_sampling
    kept_per_user = {}
    for user in np.unique(ids):
        kept_per_user[user] = min(3, int(np.sum(ids == user)))
    assert sampling.n == sum(kept_per_user.values())  # each user keeps at most 3 examples
    model = model_with(pydp_r.DPSGD(1.0, 1.5))
    budget = PrivacyBudget(delta=1e-3)
    history = model.fit(dataset, epochs=1, callbacks=[budget], verbose=0)
    ledger = model.optimizer.privacy_ledger
    assert ledger.unit == "example" and budget.privacy_unit == "example"
    per_user = history.history["user_epsilon"][-1]
    example_epsilon = history.history["epsilon"][-1]
    assert per_user == pytest.approx(ledger.user_epsilon(1e-3))
    # Group privacy for 3 examples: more than the example-level figure (about 3x).
    assert per_user > 2 * example_epsilon


def test_plain_example_data_has_no_per_user_bound():
    x, y, _ = population(20)
    model = model_with(pydp_r.DPSGD(1.0, 1.5))
    model.fit(poisson_batches((x, y), 0.2, seed=6), epochs=1, verbose=0)
    assert model.optimizer.privacy_ledger.user_epsilon(1e-3) is None


class Workers:
    """What `distribute_datasets_from_function` does on `workers` workers of one replica each,
    run in one process: each worker's dataset, from the dataset function and its context."""

    def __init__(self, workers: int, replicas: int | None = None) -> None:
        self.workers = workers
        self.num_replicas_in_sync = replicas or workers

    def distribute_datasets_from_function(self, dataset_fn):
        contexts = [
            tf.distribute.InputContext(self.workers, worker, self.num_replicas_in_sync)
            for worker in range(self.workers)
        ]
        return types.SimpleNamespace(datasets=[dataset_fn(context) for context in contexts])


def users_in(batch, owner):
    """The users whose rows a batch `(x, y, weights)` holds (`owner`: row -> user)."""
    batch_x, _, weights = (part.numpy() for part in batch)
    return {owner[tuple(row)] for row, weight in zip(batch_x, weights, strict=True) if weight > 0}


def users_of_each_worker(x, ids, batches):
    """The set of users in each worker's first batch."""
    owner = {tuple(row): user for row, user in zip(x, ids, strict=True)}
    return [users_in(next(iter(dataset)), owner) for dataset in batches.datasets]


def test_each_worker_samples_only_its_own_shard_and_the_shards_cover_every_user():
    x, y, ids = population(num_users=30, seed=3)
    workers = Workers(3)
    batches = pydp_r.data.distributed_poisson_batches(
        workers, (x, y), 1.0, user_ids=ids, max_examples_per_user=9, seed=0
    )
    shards = users_of_each_worker(x, ids, batches)
    assert set().union(*shards) == set(ids)  # rate 1: every user, all on some worker
    assert sum(len(shard) for shard in shards) == 30  # no user on two workers
    sampling = batches.pydp_r_poisson_sampling
    assert sampling.shard_sizes == tuple(len(shard) for shard in shards)
    assert (sampling.n, sampling.unit, sampling.units_per_batch) == (
        30,
        "user",
        3 * max(sampling.shard_sizes),
    )
    # A user's shard depends on their id alone: without user0, nobody else moves.
    keep = ids != "user0"
    fewer = pydp_r.data.distributed_poisson_batches(
        workers, (x[keep], y[keep]), 1.0, user_ids=ids[keep], max_examples_per_user=9, seed=0
    )
    assert users_of_each_worker(x[keep], ids[keep], fewer) == [
        shard - {"user0"} for shard in shards
    ]


def test_each_worker_draws_its_users_at_the_sampling_rate_independently():
    x, y, ids = population(num_users=40, seed=4)
    batches = pydp_r.data.distributed_poisson_batches(
        Workers(2), (x, y), 0.3, user_ids=ids, max_examples_per_user=9, seed=5, steps=200
    )
    owner = {tuple(row): user for row, user in zip(x, ids, strict=True)}
    counts = [len(users_in(batch, owner)) for dataset in batches.datasets for batch in dataset]
    # Each worker's batch: Binomial(shard size, 0.3) users; over 2 x 200 batches the total
    # users drawn has mean 0.3 * 40 * 200 and std about sqrt(0.21 * 40 * 200) = 41.
    assert abs(sum(counts) - 0.3 * 40 * 200) < 5 * 41


def test_distributed_batches_refuse_several_replicas_per_worker_and_empty_shards():
    x, y, ids = population(num_users=12)
    with pytest.raises(ValueError, match="one replica per worker"):
        pydp_r.data.distributed_poisson_batches(
            Workers(1, replicas=2), (x, y), 0.5, user_ids=ids, max_examples_per_user=2
        )
    few = np.isin(ids, ["user0", "user1"])
    with pytest.raises(ValueError, match="every shard needs at least one user"):
        pydp_r.data.distributed_poisson_batches(
            Workers(8), (x[few], y[few]), 0.5, user_ids=ids[few], max_examples_per_user=2
        )
    with pytest.raises(ValueError, match="max_batch_size"):
        pydp_r.data.distributed_poisson_batches(
            Workers(2), (x, y), 0.5, user_ids=ids, max_examples_per_user=2, max_batch_size=1
        )


def test_one_worker_trains_on_distributed_batches_as_on_poisson_batches():
    x, y, ids = population(num_users=20, seed=6)
    batches = pydp_r.data.distributed_poisson_batches(
        tf.distribute.get_strategy(), (x, y), 0.25, user_ids=ids, max_examples_per_user=3
    )
    assert batches.pydp_r_poisson_sampling.shard_sizes is None  # one shard: all users
    model = model_with(pydp_r.DPSGD(1.0, 1.0, learning_rate=0.1))
    model.fit(batches, epochs=1, verbose=0)
    (segment,) = model.optimizer.privacy_ledger.segments
    assert (segment.unit, segment.n, segment.steps) == ("user", 20, 4)
