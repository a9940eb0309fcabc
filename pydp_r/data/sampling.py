"""Poisson-sampled batches of fixed shape, so that DP-SGD's privacy accounting holds.

`pydp_r.compute_epsilon` assumes every step includes each example independently with
probability `sampling_rate` (Poisson sampling), which is where DP-SGD's amplification by
sampling comes from. `model.fit()` on a shuffled, batched dataset does not do this.
`poisson_batches` does, and keeps Keras happy: every batch is padded to one fixed size with
examples of sample weight 0, so the traced training step never changes shape.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import stats

from pydp_r._checks import check_count
from pydp_r.ledger import EXAMPLE, UNITS, USER, PoissonSampling


class ExampleLevelWarning(UserWarning):
    """Warned when data with user ids is sampled per example: the epsilon is not per user."""


# Default max_batch_size: a batch overflows it with at most this probability.
DEFAULT_OVERFLOW_PROBABILITY = 1e-6


def poisson_batch_size_bound(
    n: int, sampling_rate: float, overflow_probability: float = DEFAULT_OVERFLOW_PROBABILITY
) -> int:
    """Smallest batch size m with P(Binomial(n, sampling_rate) > m) <= overflow_probability.

    Args:
        n: Number of examples, integer >= 1.
        sampling_rate: Inclusion probability of each example, in (0, 1].
        overflow_probability: Allowed probability that a batch exceeds m, in (0, 1).

    Returns:
        The bound m, an integer in [1, n].

    Raises:
        ValueError: For an argument outside its range.
    """
    n = check_count("n", n)
    sampling_rate = _check_sampling_rate(sampling_rate)
    if not 0 < float(overflow_probability) < 1:
        raise ValueError(
            "overflow_probability must be in the open interval (0, 1); received "
            f"{overflow_probability!r}."
        )
    bound = int(stats.binom.isf(overflow_probability, n, sampling_rate))
    # isf of a discrete law can land one off; settle on the smallest m that satisfies it.
    while bound > 0 and stats.binom.sf(bound - 1, n, sampling_rate) <= overflow_probability:
        bound -= 1
    while stats.binom.sf(bound, n, sampling_rate) > overflow_probability:
        bound += 1
    return int(min(max(bound, 1), n))


def _check_sampling_rate(sampling_rate: Any) -> float:
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError):
        rate = math.nan
    if isinstance(sampling_rate, bool) or not 0 < rate <= 1:
        raise ValueError(f"sampling_rate must be a number in (0, 1]; received {sampling_rate!r}.")
    return rate


def _split_data(data: Any) -> tuple[Any, Any, np.ndarray | None]:
    """(x, y, sample_weight) from a 2- or 3-tuple, or a dict with keys x, y[, sample_weight]."""
    if isinstance(data, Mapping):
        unknown = set(data) - {"x", "y", "sample_weight"}
        if unknown or not {"x", "y"} <= set(data):
            raise ValueError(
                "data as a dict must have keys 'x' and 'y' and optionally 'sample_weight'; "
                f"received keys {sorted(map(str, data))}."
            )
        return data["x"], data["y"], data.get("sample_weight")
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y, *rest = data
        return x, y, (rest[0] if rest else None)
    raise ValueError(
        "data must be a tuple (x, y) or (x, y, sample_weight), or a dict with keys 'x', 'y' "
        f"and optionally 'sample_weight'; received {type(data).__name__}."
    )


def poisson_batches(
    data: Any,
    sampling_rate: float,
    max_batch_size: int | None = None,
    seed: int | None = None,
    steps: int | None = None,
    user_ids: Any = None,
    max_examples_per_user: int | None = None,
    privacy_unit: str = USER,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of Poisson-sampled batches, padded to a fixed size, for `fit()`.

    Each batch includes each of the n examples independently with probability
    `sampling_rate`, then is padded to `max_batch_size` rows with all-zero examples of sample
    weight 0, which add nothing to the loss or to the clipped gradient sum. The shapes never
    change, so `fit()` traces its step once. Every iteration over the dataset (every epoch of
    `fit()`) draws fresh batches; the whole sequence of epochs is reproducible from `seed`.
    Pass `shuffle=False` to `fit()` (a dataset is not shuffled by Keras anyway).

    If a draw selects more than `max_batch_size` examples, a uniformly random
    `max_batch_size` of them are kept and the rest dropped. The dataset carries its n, rate and
    `max_batch_size`, and the privacy ledger of `fit()` accounts that truncation exactly
    (`dp_accounting.TruncatedSubsampledGaussianDpEvent`, PLD accountant). With the default
    `max_batch_size` a batch is cut with probability at most 1e-6, so the figure is within
    rounding of the untruncated one. A `max_batch_size` below the expected batch
    `sampling_rate * n` is refused: most batches would be cut.

    The batches are drawn in the tf.data graph (no Python generator), so the dataset also
    works under `tf.distribute`: a `MirroredStrategy` splits each batch's rows across
    replicas, so the global batch is still one Poisson sample and the accounting is unchanged.
    Sampling must stay secret for amplification to hold: with `seed=None` it is keyed by the
    operating system's entropy, whatever `keras.utils.set_random_seed` was given.

    DP optimizers divide the noisy sum of clipped gradients by the batch dimension,
    `max_batch_size`, which does not depend on the data (as DP requires); it is larger than the
    expected batch `sampling_rate * n`, so the step is that much smaller than with a plain
    batch of the expected size; scale the learning rate if that matters.

    **Per user.** With `user_ids`, the privacy unit is the user (a wearer, a patient): each
    batch includes each *user* independently with probability `sampling_rate`, and each sampled
    user brings a uniformly random `max_examples_per_user` of their examples (all of them if
    fewer), as one block of `max_examples_per_user` rows (padded with zero-weight rows). DP
    optimizers clip each block's gradient as one, so one user's influence on a step is bounded
    by `l2_norm_clip` however many examples they have, and the ledger accounts users: the
    epsilon is per user. Batches hold `max_batch_size` user blocks (default from the number of
    users, exceeded with probability <= 1e-6), `max_batch_size * max_examples_per_user` rows.

    With `user_ids` and `privacy_unit="example"`, the alternative route: each user keeps a
    random `max_examples_per_user` of their examples (drawn once), and batches sample examples
    as without user ids. The epsilon is then per example; per user it follows by group privacy
    for groups of `max_examples_per_user` (`PrivacyLedger.user_epsilon`), far weaker, and a
    warning names the user-level route.

    Args:
        data: `(x, y)` or `(x, y, sample_weight)`, or a dict with keys "x", "y" and optionally
            "sample_weight" (what an R `list(x = , y = )` becomes). `x` and `y` are NumPy arrays
            or dicts/lists of them (multi-input or multi-output models); every array has the
            same first dimension n. `sample_weight` has shape (n,).
        sampling_rate: Probability that a batch includes a given example, in (0, 1]. For
            privacy accounting pass `batch_size = sampling_rate * n` as the batch size.
        max_batch_size: Fixed batch dimension, integer in [1, n]. Default:
            `poisson_batch_size_bound(n, sampling_rate)`, exceeded with probability <= 1e-6.
        seed: None (default) for batches keyed by fresh OS entropy, or an integer >= 0 making
            the batches of every epoch reproducible, for research: whoever knows the seed knows
            which examples each step used, and the amplification by sampling is void.
        steps: Batches per iteration (per `fit()` epoch), integer >= 1. Default
            `floor(1 / sampling_rate)` (round(1 / sampling_rate) when that is an integer): one
            epoch, never more steps than `compute_epsilon` counts per epoch.
        user_ids: None (the unit is the example), or one id per example (shape `(n,)`, any
            hashable values: strings, integers) for user-level batches; then `sampling_rate`
            and `max_batch_size` count users.
        max_examples_per_user: With `user_ids`, integer >= 1 (required): the most examples a
            user brings to one batch. Larger k uses more of each user's data per step at the
            same privacy; the rows per batch grow with it.
        privacy_unit: With `user_ids`: "user" (default, user-level batches) or "example"
            (example-level batches of at most `max_examples_per_user` examples per user).

    Returns:
        A dataset of `(x, y, sample_weight)` batches with leading dimension `max_batch_size`,
        of known cardinality `steps`. `sample_weight` is float32: the given weight (or 1) for
        sampled examples, 0 for padding.

    Raises:
        ValueError: For an argument outside its range or arrays of different lengths.
    """
    x, y, sample_weight, n = _arrays_of(data)
    sampling_rate = _check_sampling_rate(sampling_rate)
    if privacy_unit not in UNITS:
        raise ValueError(f"privacy_unit must be one of {UNITS}; received {privacy_unit!r}.")
    group_size = 1
    if user_ids is not None and privacy_unit == EXAMPLE:
        kept, group_size = _at_most_per_user(
            user_ids, n, max_examples_per_user, _checked_seed(seed)
        )
        x, y = (tf.nest.map_structure(lambda a: a[kept], part) for part in (x, y))
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight).reshape(-1)[kept]
        n = len(kept)
        warnings.warn(
            f"poisson_batches(privacy_unit='example') samples examples: the epsilon is per "
            f"example, and per user (up to {group_size} examples each) it is the far weaker "
            "group-privacy bound (PrivacyLedger.user_epsilon). For a per-user guarantee use "
            "privacy_unit='user', which samples users and clips each user's examples together.",
            ExampleLevelWarning,
            stacklevel=2,
        )
        user_ids = max_examples_per_user = None
    if user_ids is not None:
        return _user_batches(
            x,
            y,
            sample_weight,
            n,
            sampling_rate,
            user_ids,
            max_examples_per_user,
            max_batch_size,
            seed,
            steps,
        )
    if max_examples_per_user is not None:
        raise ValueError(
            "max_examples_per_user is for user-level batches: give user_ids as well (one id per "
            "example), or leave it out."
        )
    weights = _checked_weights(sample_weight, n)
    max_batch_size = _checked_max_batch_size(max_batch_size, n, sampling_rate, "n")
    steps = _checked_steps(steps, sampling_rate)
    seed = _checked_seed(seed)

    flat_x = [tf.constant(array) for array in tf.nest.flatten(x)]
    flat_y = [tf.constant(array) for array in tf.nest.flatten(y)]
    weights = tf.constant(weights)
    sampling_rate_tensor = tf.constant(sampling_rate, tf.float64)

    def one_batch(batch_seed: tf.Tensor) -> tuple[Any, Any, tf.Tensor]:
        # Every example joins independently with probability q; a draw above max_batch_size
        # keeps a uniformly random max_batch_size of the chosen (in their original order).
        seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, 0]), 2)
        draws = tf.random.stateless_uniform([n], seeds[0], dtype=tf.float64)
        chosen = tf.reshape(tf.where(draws < sampling_rate_tensor), [-1])
        ranks = tf.random.stateless_uniform(tf.shape(chosen), seeds[1])
        kept = tf.gather(
            chosen, tf.math.top_k(ranks, tf.minimum(tf.size(chosen), max_batch_size)).indices
        )
        kept = tf.sort(kept)
        padding = max_batch_size - tf.size(kept)

        def rows(array: tf.Tensor) -> tf.Tensor:
            batch = tf.gather(array, kept)
            paddings = tf.concat([[[0, padding]], tf.zeros([tf.rank(array) - 1, 2], tf.int32)], 0)
            return tf.ensure_shape(tf.pad(batch, paddings), [max_batch_size, *array.shape[1:]])

        batch_weights = tf.ensure_shape(
            tf.pad(tf.gather(weights, kept), [[0, padding]]), [max_batch_size]
        )
        return (
            tf.nest.pack_sequence_as(x, [rows(a) for a in flat_x]),
            tf.nest.pack_sequence_as(y, [rows(a) for a in flat_y]),
            batch_weights,
        )

    dataset = _sampled_dataset(one_batch, seed, steps)
    dataset.pydp_r_poisson_sampling = PoissonSampling(
        n=n,
        sampling_rate=sampling_rate,
        max_batch_size=max_batch_size,
        steps_per_epoch=steps,
        examples_per_unit=group_size,
    )
    return dataset


def _arrays_of(data: Any) -> tuple[Any, Any, Any, int]:
    """`data`'s x, y (NumPy arrays, lists made tuples), sample_weight, and their length n."""
    x, y, sample_weight = _split_data(data)
    # tf.data stacks a list into one tensor: several inputs (outputs) go in as a tuple.
    x = _lists_as_tuples(tf.nest.map_structure(np.asarray, x))
    y = _lists_as_tuples(tf.nest.map_structure(np.asarray, y))
    arrays = tf.nest.flatten(x) + tf.nest.flatten(y)
    lengths = {len(array) if array.ndim else None for array in arrays}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(
            "data arrays must all have the same first dimension n; received first dimensions "
            f"{sorted(lengths, key=str)}."
        )
    (n,) = lengths
    if n < 1:
        raise ValueError("data must hold at least one example; received n = 0.")
    return x, y, sample_weight, n


def distributed_poisson_batches(
    strategy: tf.distribute.Strategy,
    data: Any,
    sampling_rate: float,
    user_ids: Any,
    max_examples_per_user: int,
    max_batch_size: int | None = None,
    seed: int | None = None,
    steps: int | None = None,
) -> Any:
    """User-level Poisson batches for `fit()` under a multi-worker `tf.distribute` strategy:
    each worker samples its own shard of the users.

    Each user belongs to one shard, chosen by a hash of their id alone (adding or removing a
    user moves no other user), and there is one shard per replica. Every worker draws its
    shard's batches as `poisson_batches(user_ids=...)` does: each of its users independently
    with probability `sampling_rate`, up to `max_examples_per_user` examples each, cut to
    `max_batch_size` users if more are drawn, padded with zero-weight rows. So a global step
    includes every user independently with probability `sampling_rate`, one user's rows are
    all on one replica, where the DP step clips them as one unit, and the noise is added once
    to the sum over replicas. A worker holds only its shard's examples in its input pipeline.

    The privacy ledger accounts this as it ran: a user's steps are their own shard's sampler
    (the other shards' batches do not depend on them), so each shard's truncated Poisson
    mechanism (`TruncatedSubsampledGaussianDpEvent` with the shard's size) is composed and
    the epsilon is the largest over the shards. Without truncation this is exactly the
    epsilon of Poisson sampling over all users.

    On a cluster, every worker runs the same script with the same data (the same files: the
    user ids of all users are needed to know the shards' sizes, the examples only for the
    worker's own shard) and `TF_CONFIG` naming the cluster and its own task:

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = build_model()
            model.compile(optimizer=pydp_r.DPAdam(1.0, 1.1, learning_rate=1e-3), loss="mse")
        batches = pydp_r.data.distributed_poisson_batches(
            strategy, (x, y), sampling_rate=0.01, user_ids=ids, max_examples_per_user=8
        )
        model.fit(batches, epochs=10, callbacks=[pydp_r.PrivacyBudget(delta=1e-6)])

    Give a `seed` only for research (the workers derive their own seeds from it); with the
    default, each worker keys its sampling by its operating system's entropy.

    Args:
        strategy: A `tf.distribute` strategy with one replica per worker (input pipeline),
            e.g. `MultiWorkerMirroredStrategy` with one device per worker, or the default
            strategy (one shard). With several replicas in one worker (`MirroredStrategy`)
            pass `poisson_batches(...)` to `fit()` instead: the strategy splits its batches.
        data: `(x, y)` or `(x, y, sample_weight)`, or a dict with keys "x", "y" and optionally
            "sample_weight", as for `poisson_batches`.
        sampling_rate: Probability that a step includes a given user, in (0, 1].
        user_ids: One id per example (shape `(n,)`, hashable values), the same on every worker.
        max_examples_per_user: The most examples a user brings to one step, integer >= 1.
        max_batch_size: Users per replica's batch, an integer in [sampling_rate * users of the
            largest shard, users of the largest shard]. Default: the largest shard's
            `poisson_batch_size_bound` (exceeded with probability <= 1e-6).
        seed: None (default: fresh OS entropy on each worker) or an integer >= 0.
        steps: Steps per `fit()` epoch, integer >= 1. Default `floor(1 / sampling_rate)`.

    Returns:
        What `strategy.distribute_datasets_from_function` returns, carrying the sampling for
        the privacy ledger: pass it to `fit()` as it is.

    Raises:
        ValueError: For an argument outside its range, a strategy with several replicas per
            worker, or a shard with no user (fewer users than replicas).
    """
    x, y, sample_weight, n = _arrays_of(data)
    sampling_rate = _check_sampling_rate(sampling_rate)
    user_index, per_user = _checked_users(user_ids, n, max_examples_per_user)
    weights = _checked_weights(sample_weight, n)
    shards = int(strategy.num_replicas_in_sync)
    shard_of_user = _shard_of_each(np.unique(np.asarray(user_ids)), shards)
    shard_sizes = np.bincount(shard_of_user, minlength=shards)
    if shard_sizes.min() == 0:
        raise ValueError(
            f"user_ids name {len(shard_of_user)} users, and the {shards} replicas' shards hold "
            f"{shard_sizes.tolist()} of them: every shard needs at least one user (use fewer "
            "workers or more users)."
        )
    max_users = _checked_max_batch_size(
        max_batch_size, int(shard_sizes.max()), sampling_rate, "users of the largest shard"
    )
    steps = _checked_steps(steps, sampling_rate)
    seed = None if seed is None else _checked_seed(seed)
    shard_of_example = shard_of_user[user_index]

    def shard_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        if context.num_input_pipelines != shards:
            raise ValueError(
                f"distributed_poisson_batches needs one replica per worker; this strategy has "
                f"{shards} replicas on {context.num_input_pipelines} workers. Pass "
                "poisson_batches(...) to fit() instead: the strategy splits its batches."
            )
        shard = context.input_pipeline_id
        mine = np.flatnonzero(shard_of_example == shard)
        _, local_users = np.unique(user_index[mine], return_inverse=True)
        return _user_batch_dataset(
            *(tf.nest.map_structure(lambda array: array[mine], part) for part in (x, y)),
            weights[mine],
            local_users,
            per_user,
            max_users,
            sampling_rate,
            steps,
            _shard_seed(seed, shard),
        )

    batches = strategy.distribute_datasets_from_function(shard_batches)
    batches.pydp_r_poisson_sampling = PoissonSampling(
        n=len(shard_of_user),
        sampling_rate=sampling_rate,
        max_batch_size=max_users,
        steps_per_epoch=steps,
        unit=USER,
        examples_per_unit=per_user,
        shard_sizes=tuple(int(size) for size in shard_sizes) if shards > 1 else None,
    )
    return batches


def _shard_of_each(ids: np.ndarray, shards: int) -> np.ndarray:
    """Each id's shard in [0, shards), from a hash of that id alone (stable across processes)."""
    digests = (
        hashlib.blake2b(repr(value).encode(), digest_size=8).digest() for value in ids.tolist()
    )
    return np.array([int.from_bytes(digest, "little") % shards for digest in digests], np.int64)


def _shard_seed(seed: int | None, shard: int) -> int:
    """The sampling seed of one shard: derived from `seed`, or fresh OS entropy."""
    if seed is None:
        return _checked_seed(None)
    words = np.random.SeedSequence([seed, shard]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _lists_as_tuples(structure: Any) -> Any:
    """`structure` with every list (at any depth) made a tuple."""
    if isinstance(structure, (list, tuple)):
        return tuple(_lists_as_tuples(item) for item in structure)
    if isinstance(structure, Mapping):
        return {key: _lists_as_tuples(value) for key, value in structure.items()}
    return structure


def _checked_weights(sample_weight: Any, n: int) -> np.ndarray:
    """Per-example weights of shape (n,): the given ones, or ones."""
    if sample_weight is None:
        return np.ones(n, np.float32)
    weights = np.asarray(sample_weight, np.float32).reshape(-1)
    if len(weights) != n:
        raise ValueError(
            f"sample_weight must have shape ({n},), one weight per example; received "
            f"shape {np.shape(sample_weight)}."
        )
    return weights


def _checked_seed(seed: Any) -> int:
    """The sampling seed: the given integer >= 0, or fresh OS entropy."""
    if seed is None:
        return secrets.randbits(63)
    try:
        valid = not isinstance(seed, bool) and float(seed).is_integer() and seed >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"seed must be an integer >= 0 or None; received {seed!r}.")
    return int(seed)


def _checked_steps(steps: Any, sampling_rate: float) -> int:
    """Batches per iteration: the given count, or one epoch, `floor(1 / sampling_rate)`."""
    if steps is None:
        # The tolerance keeps floor(1 / 0.01) at 100 despite 1 / 0.01 = 99.999... in floats.
        return max(1, math.floor(1 / sampling_rate + 1e-9))
    return check_count("steps", steps)


def _checked_max_batch_size(
    max_batch_size: Any, units: int, sampling_rate: float, name: str
) -> int:
    """Units per batch: the given count in [expected batch, units], or the default bound.

    `name` is how the message calls the number of units ("n" for examples, "users").
    """
    if max_batch_size is None:
        return poisson_batch_size_bound(units, sampling_rate)
    count = check_count("max_batch_size", max_batch_size)
    expected = sampling_rate * units
    if not expected <= count <= units:
        counted = "" if name == "n" else f" counts {name} with user_ids:"
        raise ValueError(
            f"max_batch_size{counted or ' must be'} an integer in [sampling_rate * {name}, "
            f"{name}] = [{math.ceil(expected)}, {units}] (below the expected batch most "
            f"batches would be cut); received {max_batch_size!r}."
        )
    return count


def _checked_users(user_ids: Any, n: int, max_examples_per_user: Any) -> tuple[np.ndarray, int]:
    """Each example's user as an index in [0, users), and the most examples per user."""
    ids = np.asarray(user_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(
            f"user_ids must have shape ({n},), one id per example; received shape {ids.shape}."
        )
    if max_examples_per_user is None:
        raise ValueError(
            "max_examples_per_user is required with user_ids: the most examples of one user "
            "that training uses, an integer >= 1 (e.g. the typical number of examples per "
            "user, or less)."
        )
    _, user_index = np.unique(ids, return_inverse=True)
    return user_index, check_count("max_examples_per_user", max_examples_per_user)


def _sampled_dataset(
    one_batch: Callable[[tf.Tensor], Any], seed: int, steps: int
) -> tf.data.Dataset:
    """`steps` batches `one_batch(batch_seed)`.

    One random seed per batch, fresh at every pass over the dataset (every fit() epoch); the
    whole sequence of passes is reproducible from `seed`.
    """
    dataset = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(steps)
    dataset = dataset.map(one_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(1)


def _user_batches(
    x: Any,
    y: Any,
    sample_weight: Any,
    n: int,
    sampling_rate: float,
    user_ids: Any,
    max_examples_per_user: Any,
    max_batch_size: Any,
    seed: Any,
    steps: Any,
) -> tf.data.Dataset:
    """`poisson_batches` with users as the unit (see there)."""
    user_index, per_user = _checked_users(user_ids, n, max_examples_per_user)
    weights = _checked_weights(sample_weight, n)
    num_users = int(user_index.max()) + 1
    max_users = _checked_max_batch_size(max_batch_size, num_users, sampling_rate, "users")
    steps = _checked_steps(steps, sampling_rate)
    dataset = _user_batch_dataset(
        x, y, weights, user_index, per_user, max_users, sampling_rate, steps, _checked_seed(seed)
    )
    dataset.pydp_r_poisson_sampling = PoissonSampling(
        n=num_users,
        sampling_rate=sampling_rate,
        max_batch_size=max_users,
        steps_per_epoch=steps,
        unit=USER,
        examples_per_unit=per_user,
    )
    return dataset


def _user_batch_dataset(
    x: Any,
    y: Any,
    weights: np.ndarray,
    user_index: np.ndarray,
    per_user: int,
    max_users: int,
    sampling_rate: float,
    steps: int,
    seed: int,
) -> tf.data.Dataset:
    """`steps` batches of `max_users` user blocks of `per_user` rows, from checked arguments
    (`user_index`: each example's user in [0, users), every user present)."""
    num_users = int(user_index.max()) + 1
    order = np.argsort(user_index, kind="stable")
    examples_of_user = tf.RaggedTensor.from_value_rowids(
        tf.constant(order, tf.int64), tf.constant(user_index[order], tf.int64), num_users
    )
    flat_x = [tf.constant(array) for array in tf.nest.flatten(x)]
    flat_y = [tf.constant(array) for array in tf.nest.flatten(y)]
    weights = tf.constant(weights)
    rate = tf.constant(sampling_rate, tf.float64)
    rows = max_users * per_user

    def one_batch(batch_seed: tf.Tensor) -> tuple[Any, Any, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.stack([batch_seed, 0]), 3)
        draws = tf.random.stateless_uniform([num_users], seeds[0], dtype=tf.float64)
        chosen = tf.reshape(tf.where(draws < rate), [-1])
        # More users than max_batch_size: a uniformly random max_batch_size of them stay.
        ranks = tf.random.stateless_uniform(tf.shape(chosen), seeds[1])
        kept = tf.gather(
            chosen, tf.math.top_k(ranks, tf.minimum(tf.size(chosen), max_users)).indices
        )
        candidates = tf.gather(examples_of_user, tf.sort(kept))  # (users, their examples)
        # Each user's examples in a uniformly random order; the first per_user are taken.
        keys = tf.random.stateless_uniform(tf.shape(candidates.flat_values), seeds[2])
        keys = candidates.with_flat_values(keys).to_tensor(default_value=2.0)
        candidates = candidates.to_tensor(default_value=-1)
        shuffled = tf.gather(candidates, tf.argsort(keys, axis=1), batch_dims=1)
        taken = shuffled[:, :per_user]
        taken = tf.pad(
            taken,
            [[0, max_users - tf.shape(taken)[0]], [0, per_user - tf.shape(taken)[1]]],
            constant_values=-1,
        )
        index = tf.reshape(taken, [rows])
        present = index >= 0
        safe_index = tf.maximum(index, 0)

        def gathered(array: tf.Tensor) -> tf.Tensor:
            batch = tf.gather(array, safe_index)
            mask = tf.reshape(present, [rows] + [1] * (array.shape.rank - 1))
            return tf.ensure_shape(
                tf.where(mask, batch, tf.zeros_like(batch)), [rows, *array.shape[1:]]
            )

        batch_weights = tf.where(present, tf.gather(weights, safe_index), 0.0)
        return (
            tf.nest.pack_sequence_as(x, [gathered(a) for a in flat_x]),
            tf.nest.pack_sequence_as(y, [gathered(a) for a in flat_y]),
            tf.ensure_shape(batch_weights, [rows]),
        )

    return _sampled_dataset(one_batch, seed, steps)


def _at_most_per_user(
    user_ids: Any, n: int, max_examples_per_user: Any, seed: int
) -> tuple[np.ndarray, int]:
    """Indices of a uniformly random `max_examples_per_user` examples of each user (all of a
    user's when fewer), in their original order, and that checked count."""
    user_index, per_user = _checked_users(user_ids, n, max_examples_per_user)
    keys = np.random.default_rng(seed).random(n)
    order = np.lexsort((keys, user_index))  # by user, randomly within each
    rank = np.empty(n, np.int64)
    starts = np.searchsorted(user_index[order], user_index[order], side="left")
    rank[order] = np.arange(n) - starts
    return np.flatnonzero(rank < per_user), per_user
