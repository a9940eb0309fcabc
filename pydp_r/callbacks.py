"""Keras callbacks for DP training: record what ran in the privacy ledger, log the epsilon spent,
stop before a budget is exceeded.

`fit()` of a model with a DP optimizer always runs a `LedgerRecorder` (added by
`pydp_r.step`), which fills `optimizer.privacy_ledger` from the input `fit()` consumed and
the optimizer's own counters. `PrivacyBudget` is the user's view of that ledger.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _checks as checks
from pydp_r import _keras_seam, ledger
from pydp_r._checks import check_count
from pydp_r.ledger import EXAMPLE, POISSON, SHUFFLED, USER, PoissonSampling, Segment

# tf.data operations after poisson_batches that keep every element one fresh Poisson batch:
# maps see one batch at a time, prefetch/options/take/skip/assert_cardinality pass batches on,
# and a repeat iterates the dataset again, which draws new batches. Any other operation is
# refused: cache replays old batches, shuffle/filter choose batches, (un/re)batch regroups rows.
_POISSON_PRESERVING = {
    "Map",
    "ParallelMap",
    "Prefetch",
    "Options",
    "Take",
    "Skip",
    "AssertCardinality",
    "Repeat",
}
_WHY_REFUSED = {
    "Cache": "replays the first epoch's batches in every later one",
    "Shuffle": "chooses which batches run, and the batches are already random",
    "Filter": "chooses which batches run by their content",
    "Unbatch": "regroups rows into new batches",
    "Rebatch": "regroups rows into new batches",
    "Batch": "groups several Poisson batches into one step",
    "PaddedBatch": "groups several Poisson batches into one step",
}
# Operations that group examples into batches; operations that may yield one example more
# than once per iteration (a source dataset has no inputs; zip pairs its inputs one to one).
_BATCHING = {"Batch", "PaddedBatch", "ParallelBatch"}
_MAY_DUPLICATE = {
    "Concatenate",
    "FlatMap",
    "Interleave",
    "ParallelInterleave",
    "ChooseFromDatasets",
    "DirectedInterleave",
    "SampleFromDatasets",
}


class NonFiniteExamplesWarning(UserWarning):
    """Warned after an epoch in which the DP step left out examples holding NaN or inf."""


class ShuffledBatchesWarning(UserWarning):
    """Warned once per fit() that trains on batches that are not Poisson sampled."""


@dataclasses.dataclass(frozen=True)
class FitInput:
    """What the ledger knows about the input of one `fit()` call.

    Attributes:
        sampling: "poisson" (a `poisson_batches` dataset) or "shuffled" (anything else).
        n: Training examples when known from the input itself, else None.
        poisson: The Poisson dataset's sampling, or None.
        batch_size: The batch size `fit()` cuts arrays into, else None.
        whole_passes: True when every epoch is exactly one pass over the data (arrays, or a
            finite dataset, without `steps_per_epoch`).
        source: The input in words.
    """

    sampling: str
    n: int | None = None
    poisson: PoissonSampling | None = None
    batch_size: int | None = None
    whole_passes: bool = True
    source: str = ""

    @property
    def padded(self) -> bool:
        """Whether batches carry zero-weight padding rows (Poisson batches do)."""
        return self.sampling == POISSON


def _chain(dataset: tf.data.Dataset) -> list[tf.data.Dataset]:
    """`dataset` and the datasets it was made from, top first, while each has one input."""
    chain = [dataset]
    while True:
        inputs = _keras_seam.dataset_inputs(chain[-1])
        if len(inputs) != 1:
            return chain
        chain.append(inputs[0])


def _paths_to_poisson(
    dataset: tf.data.Dataset, above: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], PoissonSampling]]:
    """Every `poisson_batches` dataset `dataset` is made from, with the operations between."""
    sampling = getattr(dataset, "pydp_r_poisson_sampling", None)
    if sampling is not None:
        return [(above, sampling)]
    name = _keras_seam.dataset_transformation(dataset)
    found = []
    for source in _keras_seam.dataset_inputs(dataset):
        found += _paths_to_poisson(source, (*above, name))
    return found


def poisson_sampling_of(dataset: tf.data.Dataset) -> PoissonSampling | None:
    """The sampling of a `poisson_batches` dataset, also through the operations that keep each
    element one fresh Poisson batch (map, prefetch, take, skip, repeat, with_options); None for
    a dataset not made from one.

    Raises:
        ValueError: For a dataset made from Poisson batches by another operation (cache,
            shuffle, filter, batch, unbatch, rebatch, zip, concatenate, ...), naming it and why.
    """
    paths = _paths_to_poisson(dataset)
    if not paths:
        return None
    unsafe = [name for above, _ in paths for name in above if name not in _POISSON_PRESERVING]
    if len(paths) > 1:
        unsafe.append("several poisson_batches datasets combined")
    if unsafe:
        reasons = "; ".join(
            f"{name.lower()} {_WHY_REFUSED.get(name, 'may change what one batch holds')}"
            for name in dict.fromkeys(unsafe)
            if not name.startswith("several")
        )
        raise ValueError(
            "The dataset given to fit() is made from pydp_r.data.poisson_batches through "
            f"{', '.join(dict.fromkeys(unsafe))}" + (f": {reasons}" if reasons else "") + ", so "
            "the Poisson accounting would not hold. Remove it: map, prefetch, take, skip, "
            "repeat and with_options are fine, and poisson_batches draws fresh batches every "
            "epoch by itself."
        )
    return paths[0][1]


@dataclasses.dataclass(frozen=True)
class _DatasetPasses:
    """How passes over an ordinary dataset are counted (see `_dataset_passes`)."""

    n: int | None
    whole_passes: bool


def _dataset_passes(dataset: tf.data.Dataset, steps_per_epoch: Any) -> _DatasetPasses:
    """How to count the passes of an ordinary (not Poisson) dataset over its examples.

    - n known (the examples the first batching operation from the top groups, from
      cardinalities, below it only single-input operations or zips): passes from the
      examples consumed (a `.batch(b).repeat(3)` is three passes).
    - n unknown, nothing that repeats or duplicates examples, no `steps_per_epoch`: one pass
      per epoch (each example at most once per iteration).
    - Otherwise (a repeat or an operation that may duplicate examples, n unknown): every step
      may reuse every example, so each step counts as a pass.

    Raises:
        ValueError: For a repeat below the batching operation, which can put one example
            twice into one batch (twice the sensitivity), naming the fix.
    """
    chain = _chain(dataset)
    names = [_keras_seam.dataset_transformation(node) for node in chain]
    batching = next((depth for depth, name in enumerate(names) if name in _BATCHING), None)
    if batching is not None and "Repeat" in names[batching + 1 :]:
        raise ValueError(
            "The dataset given to fit() repeats its examples before batching them "
            "(dataset.repeat().batch(...)), which can put one example into a batch twice, "
            "doubling what it can move a step: the accounting cannot bound that. Batch first "
            "and repeat the batches (dataset.batch(...).repeat()), or train on "
            "pydp_r.data.poisson_batches."
        )
    many_inputs = bool(_keras_seam.dataset_inputs(chain[-1])) and names[-1] != "Zip"
    duplicating = many_inputs or any(name in _MAY_DUPLICATE for name in names)
    n = None
    if batching is not None and not duplicating:
        counts = [int(node.cardinality()) for node in chain[batching + 1 :]]
        if counts and tf.data.UNKNOWN_CARDINALITY not in counts:
            finite = [count for count in counts if count >= 0]
            n = min(finite) if finite and min(finite) > 0 else None
    repeats = "Repeat" in names or duplicating
    return _DatasetPasses(n=n, whole_passes=n is None and not repeats and steps_per_epoch is None)


def describe_fit_input(arguments: dict[str, Any]) -> FitInput:
    """The `FitInput` of a `fit()` call, from its bound arguments by name."""
    x = arguments.get("x")
    steps_per_epoch = arguments.get("steps_per_epoch")
    distributed = getattr(x, "pydp_r_poisson_sampling", None)
    if distributed is not None and not isinstance(x, tf.data.Dataset):
        # distributed_poisson_batches: the global sampling of every worker's shard.
        return FitInput(
            POISSON,
            n=distributed.n,
            poisson=distributed,
            source="pydp_r.data.distributed_poisson_batches",
        )
    if isinstance(x, tf.data.Dataset):
        sampling = poisson_sampling_of(x)
        if sampling is not None:
            return FitInput(
                POISSON, n=sampling.n, poisson=sampling, source="pydp_r.data.poisson_batches"
            )
        passes = _dataset_passes(x, steps_per_epoch)
        return FitInput(
            SHUFFLED, n=passes.n, whole_passes=passes.whole_passes, source="a tf.data dataset"
        )
    flat = [value for value in tf.nest.flatten(x) if hasattr(value, "shape")]
    if not flat or isinstance(x, keras.utils.PyDataset):
        return FitInput(SHUFFLED, whole_passes=steps_per_epoch is None, source=type(x).__name__)
    n = int(flat[0].shape[0])
    split = float(arguments.get("validation_split") or 0.0)
    if split and arguments.get("validation_data") is None:
        n = int(math.floor(n * (1.0 - split)))  # as keras' train_validation_split cuts
    return FitInput(
        SHUFFLED,
        n=n,
        batch_size=int(arguments.get("batch_size") or 32),
        whole_passes=steps_per_epoch is None,
        source="arrays",
    )


def _dp_optimizer_of(model: keras.Model) -> Any:
    """The model's DP optimizer, or a ValueError."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "privacy_ledger"):
        return optimizer
    raise ValueError(
        "PrivacyBudget needs a model compiled with a pydp_r DP optimizer (e.g. pydp_r.DPAdam); "
        f"received optimizer {type(optimizer).__name__}."
    )


class LedgerRecorder(keras.callbacks.Callback):
    """Attributes the noisy releases of one `fit()` to what it trained on, in the ledger.

    Added to every `fit()` of a DP model by `pydp_r.step`; not for users to add. The
    optimizer counts its releases in the step itself; this callback says which mechanism they
    were (Poisson batches, shuffled passes) and commits them at each epoch end and when `fit()`
    ends, however it ends. Mid-epoch, `open_segment()` is the running epoch, which the
    optimizer's `privacy_ledger` (and so a checkpoint saved mid-epoch) includes.

    Args:
        optimizer: The model's DP optimizer.
        fit_input: What `fit()` trains on.
    """

    def __init__(self, optimizer: Any, fit_input: FitInput) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.fit_input = fit_input
        self.declared_n: int | None = None  # from PrivacyBudget, used only where n is unknown
        self.ledger_paths: list[str] = []
        self.ledger_fields: dict[str, Any] = {}
        self._epoch_open = False
        self._restores_checked = False
        self._releases_at = 0
        self._examples_at = 0
        self._batches_at = 0

    @property
    def accumulation(self) -> int:
        return int(self.optimizer.gradient_accumulation_steps or 1)

    @property
    def n(self) -> int | None:
        """Examples per pass: measured from the input, else as declared to PrivacyBudget."""
        return self.fit_input.n if self.fit_input.n is not None else self.declared_n

    def segment(self, steps: int = 0, passes: int = 0, epochs: int = 0, **changes: Any) -> Segment:
        """A segment of this fit()'s mechanism with the given counts."""
        optimizer = self.optimizer
        num_microbatches = optimizer.num_microbatches
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        used_microbatching = num_microbatches is not None and (
            optimizer.largest_batch > num_microbatches * replicas
            or (self.fit_input.batch_size or 0) > num_microbatches
            or (self.fit_input.poisson is not None)
        )
        poisson = self.fit_input.poisson
        user_level = poisson is not None and poisson.unit == USER
        fields = dict(
            sampling=self.fit_input.sampling,
            noise_multiplier=float(optimizer.noise_multiplier),
            # A user's block is the unit clipped and the unit added or removed: sensitivity C.
            used_microbatching=bool(used_microbatching) and not user_level,
            unit=USER if user_level else EXAMPLE,
            examples_per_unit=1 if poisson is None else poisson.examples_per_unit,
            steps=steps,
            n=self.n,
            sampling_rate=None if poisson is None else poisson.sampling_rate,
            max_batch_size=None if poisson is None else poisson.max_batch_size,
            shard_sizes=None if poisson is None else poisson.shard_sizes,
            passes=passes if self.fit_input.sampling == SHUFFLED else 0,
            largest_batch=optimizer.largest_batch or None,
            epochs=epochs,
            origin=optimizer.lineage,
        )
        fields.update(changes)
        return Segment(**fields)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.fit_input.sampling == POISSON and self.accumulation > 1:
            raise ValueError(
                "gradient_accumulation_steps > 1 with poisson_batches would add several "
                "independent Poisson batches into one noisy step, which the Poisson "
                "accounting does not cover. Use gradient_accumulation_steps=1 with a larger "
                "sampling_rate instead."
            )
        self.optimizer.record_releases_outside_fit()
        self.optimizer.ledger_recorder = self
        self._non_finite_at = self.optimizer.non_finite_examples
        self._mark_epoch_start()

    def _mark_epoch_start(self) -> None:
        optimizer = self.optimizer
        self._releases_at = optimizer.releases
        self._examples_at = optimizer.examples_seen
        self._batches_at = int(_keras_seam.optimizer_batches_seen(optimizer).numpy())

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        between = self.open_segment()  # releases since the last epoch, made by a callback
        if between.steps:
            self.optimizer.record_segment(between)
        if not self._restores_checked:
            # After the callbacks' on_train_begin, where BackupAndRestore restores iterations.
            self._restores_checked = True
            self._presume_restored_steps(epoch)
        self._mark_epoch_start()
        self._epoch_open = True

    def _presume_restored_steps(self, epoch: int) -> None:
        """Count what a resumed fit() did not see, as if it ran with this fit()'s settings,
        with a warning: restored `iterations` that no ledger records (BackupAndRestore,
        load_weights), and epochs before `initial_epoch` that the ledger lacks (weights
        restored into an optimizer that was not built, whose state Keras does not load)."""
        optimizer = self.optimizer
        missing_steps = optimizer.unexplained_steps()
        missing_epochs = max(0, epoch - optimizer.privacy_ledger.epochs)
        if not (missing_steps or missing_epochs):
            return
        batch = optimizer.largest_batch or self.fit_input.batch_size
        if self.fit_input.sampling == POISSON:
            steps = max(missing_steps, missing_epochs * self.fit_input.poisson.steps_per_epoch)
            presumed = self.segment(steps=steps, epochs=missing_epochs, presumed=True)
        else:
            if self.n is not None and batch:
                passes = math.ceil(missing_steps * batch / self.n)
            else:
                passes = missing_steps  # nothing says two steps used different examples
            passes = max(passes, missing_epochs)
            presumed = self.segment(
                steps=missing_steps, passes=passes, epochs=missing_epochs, presumed=True
            )
        warnings.warn(
            f"fit() resumes at epoch {epoch} from a state that has taken "
            f"{optimizer.noisy_steps} noisy steps, but this optimizer's privacy ledger lacks "
            f"{missing_steps} steps and {missing_epochs} epochs of them (weights-only "
            "checkpoint or BackupAndRestore): the missing epochs are counted as if they ran "
            "with the current settings. Save the whole model (.keras) or keep a ledger file "
            "(PrivacyBudget(ledger_path=...)) to carry the exact record.",
            stacklevel=2,
        )
        optimizer.record_segment(presumed)

    def open_segment(self) -> Segment:
        """The releases of the running epoch (none outside one), as `close_epoch` would record."""
        optimizer = self.optimizer
        steps = optimizer.releases - self._releases_at
        if not self._epoch_open:
            # Between epochs (or before the first) no fit step runs: anything new is the
            # caller's (e.g. a callback's train_on_batch) and counts as unattributed.
            return optimizer.unattributed_segment(steps)
        examples = optimizer.examples_seen - self._examples_at
        passes = 0
        if self.fit_input.sampling == SHUFFLED and (steps or examples):
            if self.fit_input.whole_passes:
                passes = 1
            elif self.n is not None:
                passes = max(1, math.ceil(examples / self.n))
            else:
                passes = max(1, steps)  # nothing says two steps used different examples
            batches = int(_keras_seam.optimizer_batches_seen(optimizer).numpy())
            if self.accumulation > 1 and batches % self.accumulation:
                passes += 2  # a logical batch straddles this epoch's end
        return self.segment(steps=steps, passes=passes, epochs=1)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.close_epoch()
        dropped = self.optimizer.non_finite_examples - self._non_finite_at
        self._non_finite_at += dropped
        if dropped:
            if logs is not None:
                logs["non_finite_examples"] = dropped
            warnings.warn(
                f"Epoch {epoch + 1}: {dropped} examples had NaN or inf features, targets or "
                "sample weights and were left out of their steps (they contributed nothing).",
                NonFiniteExamplesWarning,
                stacklevel=2,
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close_epoch()

    def close_epoch(self) -> None:
        """Record the running epoch's releases (a partial epoch when fit() stopped early)."""
        if self._epoch_open:
            self.optimizer.record_segment(self.open_segment())
            self._epoch_open = False
            self._mark_epoch_start()
            for path in self.ledger_paths:
                ledger.append_to_file(path, self.optimizer.privacy_ledger, **self.ledger_fields)

    def end_fit(self) -> None:
        """Run when `fit()` ends, however: record a partial epoch and leave the optimizer."""
        try:
            self.close_epoch()
        finally:
            if self.optimizer.ledger_recorder is self:
                self.optimizer.ledger_recorder = None


class PrivacyBudget(keras.callbacks.Callback):
    """Adds the epsilon spent so far to the epoch logs; optionally stops before a budget.

    Epsilon is the accountant's figure for the optimizer's privacy ledger: the noisy steps that
    really ran, over every `fit()` of this optimizer (and of a model reloaded from `.keras`),
    with the sampling that really ran:

    - batches from `pydp_r.data.poisson_batches`: Poisson-amplified epsilon (truncation to the
      fixed batch size accounted exactly, with the PLD accountant);
    - any other input (arrays, shuffled or fixed tf.data batches): the bound that holds without
      amplification by sampling (each example at most once per epoch), far larger; a warning
      says so once and names `poisson_batches`.

    `logs["epsilon"]` shows in the progress bar and in `history.history["epsilon"]`.

    Args:
        n: Optional declared number of training examples, integer >= 1. Checked against what
            `fit()` trains on (a warning when they differ; what ran is accounted). Used only
            for a dataset with `steps_per_epoch`, whose size cannot be measured.
        batch_size: Optional declared batch size, integer >= 1, checked the same way.
        delta: Target delta, in (0, 1); a warning when it is not below 1 / n.
        target_epsilon: None (only log) or an epsilon budget > 0 over the whole ledger: no
            step is taken that would exceed it (training stops; a budget already spent raises).
        accountant: "rdp" or "pld" (PLD is used anyway for truncated Poisson batches).
        ledger_path: Optional path of an append-only ledger file (JSON lines, one record per
            epoch, each with the whole ledger in words and as data), checked here: its
            directory must exist. At the start of `fit()` every run the file records is merged
            into the model's ledger (each segment once, at its largest count; a run resumed
            from weights alone finds its own steps there), so a budget spent on the data is
            never forgotten; several processes may share one file (each write is locked).

    Attributes:
        epsilon: Epsilon after the latest completed epoch (None before the first), per
            `privacy_unit`: "user" when every step was user-level (`poisson_batches(...,
            user_ids=...)`: the guarantee is per user, e.g. per wearer), else "example".
            Example-level steps on data that named its users also log `user_epsilon`, the
            group-privacy bound per user.
        accountant_used: The accountant behind `epsilon`.

    Raises:
        ValueError: At construction for an argument outside its range; at the start of
            `fit()` when the model has no DP optimizer, or the budget is already spent.
    """

    def __init__(
        self,
        n: int | None = None,
        batch_size: int | None = None,
        delta: float = 1e-5,
        target_epsilon: float | None = None,
        accountant: str = "rdp",
        ledger_path: str | None = None,
    ) -> None:
        super().__init__()
        self.n = None if n is None else check_count("n", n)
        self.batch_size = None if batch_size is None else check_count("batch_size", batch_size)
        if self.n is not None and self.batch_size is not None:
            checks.check_n_and_batch_size(self.n, self.batch_size)
        self.delta = checks.check_delta(delta)
        self.target_epsilon = (
            None if target_epsilon is None else checks.check_target_epsilon(target_epsilon)
        )
        self.accountant = checks.check_accountant(accountant)
        self.ledger_path = None if ledger_path is None else ledger.check_ledger_path(ledger_path)
        self.epsilon: float | None = None
        self.privacy_unit = EXAMPLE
        self.accountant_used = self.accountant
        self._optimizer: Any = None
        self._allowed_steps: int | None = None
        self._allowed_passes: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = _dp_optimizer_of(self.model)
        self._optimizer = optimizer
        recorder = optimizer.ledger_recorder
        if not isinstance(recorder, LedgerRecorder):
            raise ValueError(
                "PrivacyBudget works inside model.fit() of a model compiled with a pydp_r DP "
                "optimizer; for custom loops read optimizer.privacy_ledger.epsilon(delta)."
            )
        recorder.declared_n = self.n
        fit_input = recorder.fit_input
        if self.ledger_path is not None:
            from_file = ledger.read_file(self.ledger_path)
            if from_file is not None:
                # Merged, never adopted: every run the file records counts, each once.
                optimizer.merge_ledger(from_file)
            recorder.ledger_paths.append(self.ledger_path)
            recorder.ledger_fields = {"model": self.model.name, "delta": self.delta}
        self._check_declarations(fit_input)
        if fit_input.sampling == SHUFFLED:
            warnings.warn(
                f"fit() trains on {fit_input.source} that are not Poisson sampled: the epsilon "
                "logged is the bound without amplification by sampling (each example at most "
                "once per epoch), much larger than the Poisson figure. Train on "
                "pydp_r.data.poisson_batches((x, y), sampling_rate) for the tighter, exact "
                "figure.",
                ShuffledBatchesWarning,
                stacklevel=2,
            )
        measured_n = fit_input.n if fit_input.n is not None else self.n
        if measured_n is not None and self.delta >= 1 / measured_n:
            warnings.warn(
                f"delta={self.delta:g} is not below 1/n = {1 / measured_n:.3g}: a guarantee "
                "this weak allows releasing a few examples outright.",
                stacklevel=2,
            )
        self._budget_planned = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Planned at the first epoch, once the recorder has counted any resumed epochs.
        if self.target_epsilon is not None and not self._budget_planned:
            self._budget_planned = True
            self._plan_budget(self._optimizer.ledger_recorder)

    def _check_declarations(self, fit_input: FitInput) -> None:
        ran_n = fit_input.n
        if self.n is not None and ran_n is not None and self.n != ran_n:
            warnings.warn(
                f"PrivacyBudget was told n={self.n}, but fit() trains on {ran_n} examples: "
                "epsilon is computed for what runs.",
                stacklevel=3,
            )
        if fit_input.poisson is not None:
            ran_batch = fit_input.poisson.sampling_rate * fit_input.poisson.n
        else:
            ran_batch = fit_input.batch_size
        if self.batch_size is not None and ran_batch is not None:
            if abs(self.batch_size - ran_batch) > 0.5:
                warnings.warn(
                    f"PrivacyBudget was told batch_size={self.batch_size}, but fit() trains "
                    f"on batches of {ran_batch:g} (expected) examples: epsilon is computed "
                    "for what runs.",
                    stacklevel=3,
                )

    def _within(self, extra: Segment) -> bool:
        ledger_now = self._optimizer.privacy_ledger
        return ledger_now.epsilon(self.delta, self.accountant, extra) <= self.target_epsilon

    def _largest_count(self, make: Any, upper: int) -> int:
        """Largest count c in [0, upper] with `make(c)` within budget (monotone search)."""
        if self._within(make(upper)):
            return upper
        low, high = 0, upper  # within(low), not within(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self._within(make(middle)):
                low = middle
            else:
                high = middle
        return low

    def _plan_budget(self, recorder: LedgerRecorder) -> None:
        """How many more steps (Poisson) or passes (shuffled) fit the budget; raise if none."""
        spent = self._optimizer.privacy_ledger.epsilon(self.delta, self.accountant)
        params = self.params or {}
        epochs = max(1, int(params.get("epochs") or 1))
        if recorder.fit_input.sampling == POISSON:
            per_epoch = params.get("steps") or recorder.fit_input.poisson.steps_per_epoch
            upper = max(1, epochs * int(per_epoch))
            self._allowed_steps = self._largest_count(
                lambda steps: recorder.segment(steps=steps), upper
            )
            allowed = self._allowed_steps
        else:
            self._allowed_passes = self._largest_count(
                lambda passes: recorder.segment(passes=passes), epochs + 2
            )
            allowed = self._allowed_passes
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if 0 < allowed < per_call and recorder.fit_input.sampling == POISSON:
            raise ValueError(
                f"target_epsilon={self.target_epsilon!r} leaves room for {allowed} more noisy "
                f"steps, but the model runs steps_per_execution={per_call} steps between budget "
                f"checks, so the first of them would exceed it. Compile with "
                f"steps_per_execution <= {allowed}."
            )
        if allowed == 0:
            raise ValueError(
                f"target_epsilon={self.target_epsilon!r} is already spent or would be exceeded "
                f"by the next step: this model's privacy ledger stands at epsilon {spent:.4g} "
                f"at delta={self.delta!r}:\n{self._optimizer.privacy_ledger.describe()}"
            )
        self._steps_at_begin = self._optimizer.noisy_steps
        self._examples_at_begin = self._optimizer.examples_seen
        self._passes_at_begin = self._optimizer.privacy_ledger.passes

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.target_epsilon is None:
            return
        optimizer = self._optimizer
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self._allowed_steps is not None:
            taken = optimizer.noisy_steps - self._steps_at_begin
            if taken + per_call > self._allowed_steps:
                self.model.stop_training = True
            return
        recorder = optimizer.ledger_recorder
        if recorder.fit_input.whole_passes or recorder.n is None:
            return  # enforced per epoch
        examples = optimizer.examples_seen - self._examples_at_begin
        next_examples = examples + per_call * max(optimizer.largest_batch, 1)
        if math.ceil(next_examples / recorder.n) > self._allowed_passes:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._optimizer
        self.accountant_used = optimizer.privacy_ledger.accountant_for(self.accountant)
        recorded = optimizer.privacy_ledger
        self.epsilon = recorded.epsilon(self.delta, self.accountant)
        self.privacy_unit = recorded.unit
        if logs is not None:
            logs["epsilon"] = self.epsilon
            if recorded.unit == EXAMPLE and any(s.examples_per_unit > 1 for s in recorded.segments):
                # Example-level steps on data that named its users: the per-user bound too.
                logs["user_epsilon"] = recorded.user_epsilon(self.delta, self.accountant)
        recorder = optimizer.ledger_recorder
        if self._allowed_passes is not None and recorder.fit_input.whole_passes:
            cost = 3 if recorder.accumulation > 1 else 1  # a pass, plus a possible straddle
            if self._passes_this_fit() + cost > self._allowed_passes:
                self.model.stop_training = True

    def _passes_this_fit(self) -> int:
        """Passes recorded since the budget was planned (shuffled input)."""
        return self._optimizer.privacy_ledger.passes - self._passes_at_begin
