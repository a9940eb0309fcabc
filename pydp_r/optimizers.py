"""DP-SGD versions of Keras 3 optimizers: clip per-example gradients, add Gaussian noise, then step.

A DP optimizer replaces the one in `model.compile(optimizer=...)`; nothing else changes. Keras 3's
trainer hands an optimizer only the batch's aggregated gradient, which carries no per-example bound,
so making a DP optimizer installs `pydp_r.step`, which routes `fit()`'s training step for models
compiled with one through per-example clipping and the optimizer's `private_gradients`.
Aggregated gradients handed to a DP optimizer any other way are refused with an error.

Every noisy release is counted in the step that makes it, by a counter that lives only in this
process, and attributed to the privacy ledger (`pydp_r.ledger`): by `fit()` to what it trained
on, otherwise as unattributed steps. The noise key lives in the same process-only state: no
TensorFlow or Keras save format can reach it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import secrets
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam, ledger, step
from pydp_r._checks import check_count, check_eager_execution, check_noise_multiplier, check_real
from pydp_r.step import clipping

# Largest noise std (noise_multiplier * l2_norm_clip) that stays finite in float32 after
# loss scaling.
_LARGEST_NOISE_STDDEV = 1e30


def _noise_key(noise_seed: int | None) -> tuple[int, int]:
    """Philox key and starting counter (2 x 63 bits): the research seed, or OS entropy."""
    if noise_seed is not None:
        return (noise_seed % 2**63, 0)
    return (secrets.randbits(63), secrets.randbits(63))


def _gaussian_noise(generator: tf.random.Generator, size: Any, stddev: Any) -> tf.Tensor:
    """`size` independent draws of N(0, stddev^2), float32, by Box-Muller from 32-bit Philox words.

    `generator.normal` computes the same transform one element at a time (scalar log, sin and
    cos per pair) and took twice the CPU time on this project's machine: 13.8 ms against 7.3 ms
    for 1.39M draws, the noise of Keras' multi-input example, whose two embedding tables make
    it a quarter of the DP step (benchmarks/README.md, "The four over 1.5x"). Here each
    transform is one vectorized pass over all pairs.

    Args:
        generator: The optimizer's secret-keyed Philox generator; advanced by the draw.
        size: Number of draws, an int32 scalar >= 0.
        stddev: Standard deviation, a float32 scalar >= 0.

    Returns:
        A float32 vector of `size` draws.
    """
    pairs = (size + 1) // 2
    words = generator.uniform_full_int(tf.stack([2, pairs]), dtype=tf.uint32)
    radius, angle = _box_muller_polar(words[0], words[1])
    radius = radius * stddev
    return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)[:size]


def _box_muller_polar(
    radius_words: tf.Tensor, angle_words: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Radius and angle of Box-Muller pairs from uniform 32-bit words (uint32 tensors).

    The radius' uniform is `(k + 1/2) / 2^32`, in (0, 1], so it is never log(0) and reaches
    down to 2^-33: the radius goes up to sqrt(66 ln 2) = 6.77 standard deviations
    (TensorFlow's `normal` clamps its uniform at 1e-7: 5.68). The angle is `2 pi k / 2^32`.
    """
    uniform = (tf.cast(radius_words, tf.float32) + 0.5) * (2.0**-32)
    radius = tf.sqrt(-2.0 * tf.math.log(uniform))
    angle = tf.cast(angle_words, tf.float32) * (2.0 * math.pi * 2.0**-32)
    return radius, angle


def _refuse_change(name: str) -> None:
    raise AttributeError(
        f"{name} of a DP optimizer is fixed at construction: the traced training step bakes "
        "it in and the privacy ledger reads it. Build a new optimizer with the value you want "
        "and compile the model with it."
    )


class _ProcessLocalState:
    """The noise generator and the count of noisy releases, kept out of every save format.

    A plain object, not a `tf.Module` or trackable: `tf.train.Checkpoint`, `tf.saved_model.save`,
    `model.export`, `.keras` files and weights files save only what is tracked, so the secret
    noise key (and a counter a restore could roll back) never leaves the process.
    """

    def __init__(self, noise_seed: int | None, releases: int = 0) -> None:
        self.noise_seed = noise_seed
        key, counter = _noise_key(noise_seed)
        self.noise_generator = tf.random.Generator.from_key_counter(
            key=key, counter=[counter, 0], alg="philox"
        )
        # Noisy releases made by this optimizer object in this process; restores never lower it.
        self.releases = tf.Variable(
            releases,
            dtype=tf.int64,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> _ProcessLocalState:
        # A copied optimizer gets a key of its own: two optimizers drawing the same noise would
        # let the difference of their releases cancel it. The count of releases is kept.
        return _ProcessLocalState(self.noise_seed, int(self.releases.numpy()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling carries no key: the unpickled state draws its own (or re-seeds noise_seed).
        return (_ProcessLocalState, (self.noise_seed, int(self.releases.numpy())))


class LedgerMismatchWarning(UserWarning):
    """Warned when an optimizer's `iterations` exceed what its privacy ledger records."""


_keras_seam.check_keras_version()
_keras_seam.check_tensorflow()


class NoPrivacyWarning(UserWarning):
    """Warned when a DP optimizer is built with `noise_multiplier=0`: it then gives no privacy."""


_AGGREGATED_GRADIENTS_MESSAGE = (
    "{name} received aggregated gradients through apply_gradients()/apply(): not the ones its "
    "last compute_dp_gradients() returned, unchanged. A DP optimizer "
    "needs per-example gradients to clip; applying batch gradients would train without privacy. "
    "Use model.fit() on a model that does not override train_step (pydp_r computes per-example "
    "gradients there), or in a custom training loop call "
    "`grads = optimizer.compute_dp_gradients(loss_fn, inputs, variables)` and then "
    "`optimizer.apply_gradients(zip(grads, variables))`."
)


_thread_state = threading.local()


def _pending_private_gradients() -> dict[int, list[Any]]:
    """Per optimizer id, the private gradients this thread computed and has not applied.

    Per thread, because tf.distribute traces each replica's step in its own thread.
    """
    if not hasattr(_thread_state, "pending"):
        _thread_state.pending = {}
    return _thread_state.pending


class DPOptimizerMixin:
    """Turns a Keras optimizer class into its DP-SGD version (mixed in before the Keras class).

    Args:
        l2_norm_clip: Clipping bound C, > 0: each example's (or microbatch's) gradient over all
            trainable variables together is scaled to L2 norm at most C.
        noise_multiplier: Ratio of the Gaussian noise std to C, >= 0. The noise added to the
            clipped sum has std `noise_multiplier * l2_norm_clip`. 0 gives no privacy.
        num_microbatches: None (default) clips every example separately; an integer k >= 1 that
            divides the batch size clips the mean gradient of each of k equal microbatches.
        gradient_accumulation_steps: Integer >= 1. Above 1, clipped gradients of that many
            consecutive batches are accumulated and noise is added once per logical batch.
        noise_seed: None (default): the Gaussian noise is keyed by 63 bits of the operating
            system's entropy, drawn when the optimizer is made, so nobody can predict or
            subtract it, whatever `keras.utils.set_random_seed` was given. An integer >= 0
            makes the noise reproducible, for research only: anyone who knows the seed can
            remove the noise, so never release a model trained with one.
        privacy_ledger: The record of noisy steps already taken (restored by Keras from a
            saved optimizer config; not for users to pass).
        ledger_id: Lineage id of the ledger (restored from a saved config; not for users).
        *args, **kwargs: Arguments of the wrapped Keras optimizer (`learning_rate`, ...).

    `l2_norm_clip`, `noise_multiplier`, `num_microbatches` and `noise_seed` are read-only
    after construction: the traced step bakes them in, so a change could not take effect.

    Raises:
        ValueError: For an argument outside its range.
    """

    _default_name = "dp_optimizer"  # make_dp_optimizer_class sets "dp_" + Keras' own name

    def __init__(
        self,
        l2_norm_clip: float,
        noise_multiplier: float,
        num_microbatches: int | None = None,
        gradient_accumulation_steps: int | None = 1,
        *args: Any,
        noise_seed: int | None = None,
        privacy_ledger: Any = None,
        ledger_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_eager_execution(type(self).__name__)
        l2_norm_clip = check_real(
            "l2_norm_clip", l2_norm_clip, "a finite number > 0", lambda v: 0 < v < math.inf
        )
        noise_multiplier = check_noise_multiplier(noise_multiplier)
        if num_microbatches is not None:
            num_microbatches = check_count("num_microbatches", num_microbatches)
        accumulation = gradient_accumulation_steps
        if accumulation is not None:
            accumulation = check_count("gradient_accumulation_steps", accumulation)
        # Keras counts accumulation as None (off) or >= 2.
        kwargs["gradient_accumulation_steps"] = None if accumulation in (None, 1) else accumulation
        if noise_multiplier * l2_norm_clip > _LARGEST_NOISE_STDDEV:
            raise ValueError(
                "noise_multiplier * l2_norm_clip must be at most "
                f"{_LARGEST_NOISE_STDDEV:g} so that the noise std is a finite float32; received "
                f"{noise_multiplier!r} * {l2_norm_clip!r}."
            )
        if noise_seed is not None:
            noise_seed = check_count("noise_seed", noise_seed, minimum=0)
        kwargs.setdefault("name", self._default_name)
        super().__init__(*args, **kwargs)
        step.install()  # fit() of a model compiled with this optimizer runs the DP step
        # Fixed at construction: the traced training step bakes them in, and the privacy
        # ledger reads these same values (read-only properties below).
        self._l2_norm_clip = l2_norm_clip
        self._noise_multiplier = noise_multiplier
        self._num_microbatches = num_microbatches
        self._noise_seed = noise_seed
        self._local = _ProcessLocalState(noise_seed)
        self._ledger = ledger.PrivacyLedger.from_config(privacy_ledger)
        if ledger_id is not None:
            ledger_id = check_count("ledger_id", ledger_id, minimum=1)
        self._ledger_id = ledger_id if ledger_id is not None else secrets.randbits(62) + 1
        self._releases_recorded = 0
        self._unexplained_warned = 0
        # The callback recording the running fit() in the ledger, None outside fit().
        self.ledger_recorder: Any = None
        # Set by fit() for Poisson batches, whose zero-weight padding rows the step leaves out
        # of the reported loss and metrics.
        self.input_is_padded = False
        # Set by fit() for user-level Poisson batches: (users per batch, rows per user); the
        # step clips each user's block of rows as one unit.
        self.user_blocks: tuple[int, int] | None = None
        if noise_multiplier == 0:
            warnings.warn(
                f"{type(self).__name__} has noise_multiplier=0: gradients are clipped but no "
                "noise is added, so training gives NO differential privacy.",
                NoPrivacyWarning,
                stacklevel=2,
            )

    @property
    def l2_norm_clip(self) -> float:
        """Clipping bound C (> 0), fixed at construction."""
        return self._l2_norm_clip

    @l2_norm_clip.setter
    def l2_norm_clip(self, value: Any) -> None:
        _refuse_change("l2_norm_clip")

    @property
    def noise_multiplier(self) -> float:
        """Noise std over C (>= 0), fixed at construction."""
        return self._noise_multiplier

    @noise_multiplier.setter
    def noise_multiplier(self, value: Any) -> None:
        _refuse_change("noise_multiplier")

    @property
    def num_microbatches(self) -> int | None:
        """None (per-example clipping) or the number of microbatches, fixed at construction."""
        return self._num_microbatches

    @num_microbatches.setter
    def num_microbatches(self, value: Any) -> None:
        _refuse_change("num_microbatches")

    @property
    def noise_seed(self) -> int | None:
        """None (unpredictable noise, the default) or the research seed given at construction."""
        return self._noise_seed

    def build(self, variables: Sequence[Any]) -> None:
        super().build(variables)
        # Measured by the step for the privacy ledger: examples processed (batch rows, padding
        # of microbatches excluded) and the largest batch seen. Data-independent: the batch
        # dimension, never the number of real rows of a Poisson batch.
        self._examples_seen = self.add_variable(
            (),
            initializer="zeros",
            dtype="int64",
            aggregation="only_first_replica",
            name="examples_seen",
        )
        self._largest_batch = self.add_variable(
            (),
            initializer="zeros",
            dtype="int64",
            aggregation="only_first_replica",
            name="largest_batch",
        )
        self._non_finite_examples = self.add_variable(
            (),
            initializer="zeros",
            dtype="int64",
            aggregation="only_first_replica",
            name="non_finite_examples",
        )
        # The ledger's lineage, saved with the weights: an optimizer restored from weights
        # alone (BackupAndRestore, load_weights, tf.train.Checkpoint) knows whose steps its
        # `iterations` count, and a ledger file recording that lineage explains them.
        ledger_id = self._ledger_id
        self._lineage = self.add_variable(
            (),
            initializer=lambda shape, dtype: tf.constant(ledger_id, tf.int64),
            dtype="int64",
            aggregation="only_first_replica",
            name="lineage",
        )

    def count_examples(self, batch_size: tf.Tensor) -> None:
        """Record a processed batch of `batch_size` rows (per replica) for the ledger."""
        global_rows = (
            tf.cast(batch_size, tf.int64) * tf.distribute.get_strategy().num_replicas_in_sync
        )
        self._examples_seen.assign_add(global_rows)
        self._largest_batch.assign(tf.maximum(self._largest_batch, global_rows))

    def count_non_finite_examples(self, count: tf.Tensor) -> None:
        """Record `count` examples (per replica) left out of a batch for NaN or inf values."""
        self._non_finite_examples.assign_add(tf.cast(count, tf.int64))

    @property
    def non_finite_examples(self) -> int:
        """Examples the DP step left out for NaN or inf features, targets or weights."""
        return int(self._non_finite_examples.numpy()) if self.built else 0

    @property
    def examples_seen(self) -> int:
        """Examples (batch rows) the DP step has processed, over all fit() calls."""
        return int(self._examples_seen.numpy()) if self.built else 0

    @property
    def largest_batch(self) -> int:
        """Largest batch (rows, all replicas) the DP step has processed; 0 before any."""
        return int(self._largest_batch.numpy()) if self.built else 0

    @property
    def lineage(self) -> int:
        """Id of the ledger lineage this optimizer's state descends from (restored with weights)."""
        return int(self._lineage.numpy()) if self.built else self._ledger_id

    @property
    def releases(self) -> int:
        """Noisy releases this optimizer object made in this process (a restore never lowers it)."""
        return int(self._local.releases.numpy())

    @property
    def privacy_ledger(self) -> ledger.PrivacyLedger:
        """Every noisy step of this optimizer's lineage, as an upper bound (a copy).

        Besides what `fit()` recorded, it counts: releases made outside `fit()` (train_on_batch,
        custom loops), as unattributed steps; the running epoch of a `fit()` (for checkpoints
        saved mid-epoch); and restored `iterations` that the ledger does not explain (a
        weights-only restore, an edited ledger), as unattributed steps with a warning.
        """
        self.record_releases_outside_fit()
        snapshot = self._ledger.copy()
        if self.ledger_recorder is not None:
            running = self.ledger_recorder.open_segment()
            if running.steps or running.passes:
                snapshot.record(running)
            return snapshot
        unexplained = self.unexplained_steps(snapshot)
        if unexplained:
            # Counted in every copy handed out (and so saved with the config), but not committed:
            # a ledger file merged at the next fit() may still explain them.
            snapshot.record(self.unattributed_segment(unexplained))
            if unexplained != self._unexplained_warned:
                self._unexplained_warned = unexplained
                warnings.warn(
                    f"{type(self).__name__}'s privacy ledger records "
                    f"{self.noisy_steps - unexplained} noisy steps of its lineage, but its "
                    f"restored state has taken {self.noisy_steps}: the {unexplained} steps "
                    "nothing records are counted as unattributed steps (a Gaussian mechanism "
                    "each). Restore from a .keras file or keep a ledger file "
                    "(PrivacyBudget(ledger_path=...)) to keep the exact record.",
                    LedgerMismatchWarning,
                    stacklevel=2,
                )
        return snapshot

    def unexplained_steps(self, recorded: ledger.PrivacyLedger | None = None) -> int:
        """Noisy steps in `iterations` (restored state) that the ledger's lineage lacks."""
        recorded = self._ledger if recorded is None else recorded
        return max(0, self.noisy_steps - recorded.steps_of(self.lineage))

    def unattributed_segment(self, steps: int) -> ledger.Segment:
        """`steps` noisy steps with no known input: each a Gaussian mechanism on every example."""
        return ledger.Segment(
            sampling=ledger.UNATTRIBUTED,
            noise_multiplier=float(self.noise_multiplier),
            used_microbatching=self.num_microbatches is not None,
            steps=steps,
            origin=self.lineage,
        )

    def record_segment(self, segment: ledger.Segment) -> None:
        """Commit `segment` to the ledger; every release made so far is then recorded."""
        self._ledger.record(dataclasses.replace(segment, origin=self.lineage))
        self._releases_recorded = self.releases

    def record_releases_outside_fit(self) -> None:
        """Record releases made outside `fit()` since the last record, as unattributed steps."""
        pending = self.releases - self._releases_recorded
        if pending > 0 and self.ledger_recorder is None:
            self.record_segment(self.unattributed_segment(pending))

    def merge_ledger(self, other: ledger.PrivacyLedger) -> None:
        """Merge another record of spent privacy (a ledger file's): counts only go up."""
        self._ledger.merge(other)

    @property
    def noisy_steps(self) -> int:
        """Noisy updates released so far: steps, or logical batches with accumulation."""
        return int(self.iterations.numpy())  # Keras counts logical batches under accumulation

    @property
    def noise_stddev(self) -> float:
        """Std of the Gaussian noise added to the sum of clipped gradients (same units as C)."""
        return self.noise_multiplier * self.l2_norm_clip

    def compute_dp_gradients(
        self,
        loss_fn: Callable[[Any], tf.Tensor],
        inputs: Any,
        variables: Sequence[tf.Variable],
    ) -> list[tf.Tensor]:
        """Clipped, noised and averaged gradients for one batch, for custom training loops.

        Args:
            loss_fn: Maps a batch (the structure of `inputs`) to its mean loss, a scalar. It is
                called on each example as a batch of one (or on each microbatch), vectorized.
            inputs: Nested structure of tensors with a common leading batch dimension, e.g.
                `(x, y)`.
            variables: The variables to update, e.g. `model.trainable_variables`.

        Returns:
            One gradient per variable: the sum of per-example gradients clipped to
            `l2_norm_clip`, plus Gaussian noise of std `noise_multiplier * l2_norm_clip`,
            divided by the number of examples (microbatches). Pass them to `apply_gradients`.
        """
        gradient_sums, _, _, num_units = clipping.clipped_gradient_sum(
            lambda unit: (loss_fn(unit), ()),
            inputs,
            variables,
            self.l2_norm_clip,
            self.num_microbatches,
        )
        return self.private_gradients(gradient_sums, num_units)

    def private_gradients(
        self,
        clipped_gradient_sums: Sequence[tf.Tensor],
        num_units: tf.Tensor,
        loss_scale: float = 1.0,
    ) -> list[tf.Tensor]:
        """Noise and average sums of clipped gradients (`_noised_average`), count the release,
        and mark the result as the only gradients `apply` accepts next.

        Args, Returns: as `_noised_average`.
        """
        gradients = self._noised_average(clipped_gradient_sums, num_units, loss_scale)
        # Every replica counts the release; the count's aggregation keeps each worker's first
        # replica's, so every worker (not only the one adding the noise) counts each step.
        is_release = tf.constant(True)
        if self.gradient_accumulation_steps:
            is_release = self._is_update_step()
        with tf.control_dependencies(gradients):
            self._local.releases.assign_add(tf.cast(is_release, tf.int64))
        _pending_private_gradients()[id(self)] = list(gradients)
        return gradients

    def discard_private_gradients(self) -> None:
        """Forget gradients computed and never applied (then `apply` refuses any until the next
        `compute_dp_gradients`)."""
        _pending_private_gradients().pop(id(self), None)

    def _is_update_step(self) -> tf.Tensor:
        """Whether this batch completes a logical batch (always true without accumulation)."""
        if not self.gradient_accumulation_steps:
            return tf.constant(True)
        batches_seen = _keras_seam.optimizer_batches_seen(self)
        return (batches_seen + 1) % self.gradient_accumulation_steps == 0

    def _is_noise_replica(self) -> tf.Tensor:
        """Whether this replica adds the noise: the first one (or the only one)."""
        replica_context = tf.distribute.get_replica_context()
        if tf.distribute.get_strategy().num_replicas_in_sync > 1 and replica_context is not None:
            return tf.equal(replica_context.replica_id_in_sync_group, 0)
        return tf.constant(True)

    def _noised_average(
        self,
        clipped_gradient_sums: Sequence[tf.Tensor],
        num_units: tf.Tensor,
        loss_scale: float = 1.0,
    ) -> list[tf.Tensor]:
        """Add Gaussian noise of std `noise_multiplier * l2_norm_clip` to sums of clipped gradients
        and divide by the number of units; the result may then be applied once.

        Args:
            clipped_gradient_sums: Per variable, the sum over units (examples or microbatches) of
                gradients each clipped to `l2_norm_clip` in global L2 norm.
            num_units: Number of units summed (a data-independent batch dimension).
            loss_scale: Factor the losses were multiplied by before differentiation (Keras'
                `loss_scale_factor`): the sums were clipped at `loss_scale * l2_norm_clip`, so
                the noise is scaled alike; `apply` divides both back out.

        Returns:
            The private gradients, one per variable.
        """
        noise_scale = tf.constant(self.noise_stddev * loss_scale, tf.float32)
        # Keras averages the accumulated steps' gradients; noise joins only the step that
        # completes a logical batch, so it is added once per logical batch.
        noise_scale = noise_scale * tf.cast(self._is_update_step(), tf.float32)
        # Under tf.distribute, Keras sums the replicas' gradients: the first replica alone adds
        # the noise, so the global sum carries it exactly once, and every replica divides by
        # the global number of units.
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        noise_scale = noise_scale * tf.cast(self._is_noise_replica(), tf.float32)
        global_units = tf.cast(num_units, tf.float32) * num_replicas
        # One Philox generator per optimizer, keyed by the secret key and advancing with every
        # draw: fresh noise for every call (also for repeated calls at one step, or after
        # weights and optimizer state are restored), untouched by Keras' seeds.
        # One draw for every variable: fewer, larger random ops.
        sizes = [tf.size(gradient_sum) for gradient_sum in clipped_gradient_sums]
        noise = _gaussian_noise(self._local.noise_generator, tf.add_n(sizes), noise_scale)
        gradients = []
        for gradient_sum, part in zip(clipped_gradient_sums, tf.split(noise, sizes), strict=True):
            part = tf.reshape(part, tf.shape(gradient_sum))
            noisy_sum = gradient_sum + tf.cast(part, gradient_sum.dtype)
            gradients.append(noisy_sum / tf.cast(global_units, gradient_sum.dtype))
        return gradients

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        """Apply `(gradient, variable)` pairs; the gradients must be exactly those the last
        `compute_dp_gradients` returned (anything else is refused, malformed input included)."""
        try:
            pairs = list(grads_and_vars)
            well_formed = all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs)
        except TypeError:  # not iterable (a single tensor)
            well_formed = False
        if not well_formed or not pairs:
            _pending_private_gradients().pop(id(self), None)
            raise RuntimeError(_AGGREGATED_GRADIENTS_MESSAGE.format(name=type(self).__name__))
        return super().apply_gradients(pairs)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
        """Apply exactly the gradients the last `compute_dp_gradients` returned; refuses others."""
        private = _pending_private_gradients().pop(id(self), None)
        grads = list(grads) if isinstance(grads, (list, tuple)) else grads
        if not (
            isinstance(grads, list)
            and private is not None
            and len(grads) == len(private)
            and all(given is made for given, made in zip(grads, private, strict=True))
        ):
            raise RuntimeError(_AGGREGATED_GRADIENTS_MESSAGE.format(name=type(self).__name__))
        return super().apply(grads, trainable_variables)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "l2_norm_clip": self.l2_norm_clip,
                "noise_multiplier": self.noise_multiplier,
                "num_microbatches": self.num_microbatches,
                "privacy_ledger": self.privacy_ledger.get_config(),
                "ledger_id": self.lineage,
            }
        )
        if self.noise_seed is not None:  # the secret default key is never saved
            config["noise_seed"] = self.noise_seed
        return config


def make_dp_optimizer_class(keras_optimizer_class: type) -> type:
    """Return the DP-SGD version of a Keras 3 optimizer class.

    Args:
        keras_optimizer_class: A subclass of `keras.optimizers.Optimizer`, e.g. `Lion`.

    Returns:
        A Keras-serializable class named `"DP" + keras_optimizer_class.__name__` whose constructor
        takes `(l2_norm_clip, noise_multiplier, num_microbatches=None,
        gradient_accumulation_steps=1, *args, **kwargs)`, the rest going to the wrapped class.

    Raises:
        ValueError: When the argument is not a Keras optimizer class, or is already a DP one.
    """
    if not (
        isinstance(keras_optimizer_class, type)
        and issubclass(keras_optimizer_class, keras.optimizers.Optimizer)
    ):
        raise ValueError(
            "keras_optimizer_class must be a subclass of keras.optimizers.Optimizer; received "
            f"{keras_optimizer_class!r}."
        )
    if issubclass(keras_optimizer_class, DPOptimizerMixin):
        raise ValueError(f"keras_optimizer_class {keras_optimizer_class.__name__} is already DP.")
    name = "DP" + keras_optimizer_class.__name__
    keras_default_name = inspect.signature(keras_optimizer_class).parameters.get("name")
    base_name = (
        keras_default_name.default
        if keras_default_name is not None and isinstance(keras_default_name.default, str)
        else keras_optimizer_class.__name__.lower()
    )
    dp_class = type(
        name,
        (DPOptimizerMixin, keras_optimizer_class),
        {
            "_default_name": "dp_" + base_name.lower(),
            "__doc__": f"DP-SGD version of `keras.optimizers.{keras_optimizer_class.__name__}`.\n\n"
            + (DPOptimizerMixin.__doc__ or "").split("\n", 1)[1],
            "__module__": __name__,
        },
    )
    return keras.saving.register_keras_serializable(package="pydp_r", name=name)(dp_class)


DPSGD = make_dp_optimizer_class(keras.optimizers.SGD)
DPAdam = make_dp_optimizer_class(keras.optimizers.Adam)
DPAdagrad = make_dp_optimizer_class(keras.optimizers.Adagrad)
DPRMSprop = make_dp_optimizer_class(keras.optimizers.RMSprop)

# TensorFlow Privacy's names, same argument order, for scripts migrating from it.
DPKerasSGDOptimizer = DPSGD
DPKerasAdamOptimizer = DPAdam
DPKerasAdagradOptimizer = DPAdagrad
DPKerasRMSpropOptimizer = DPRMSprop
