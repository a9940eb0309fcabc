"""The privacy ledger: a record of the noisy steps a DP optimizer really took, and their epsilon.

Every DP optimizer carries a `PrivacyLedger` (`optimizer.privacy_ledger`). `fit()` fills it from
what ran, not from what anyone declared: the sampling of its input (Poisson batches from
`pydp_r.data.poisson_batches`, which carry their n, rate and maximum size; or fixed/shuffled
batches, measured), the noise multiplier and clip the traced step used, and the optimizer's own
count of noisy updates. The ledger is saved in the optimizer's config, so it survives `.keras`
save/load; `PrivacyBudget(ledger_path=...)` also appends it to a human-readable file.

How a run of steps ("segment") is accounted, with Google's `dp_accounting`:

- Poisson batches: `steps` Poisson-subsampled Gaussian mechanisms at rate q. When a batch could
  exceed its fixed size (`max_batch_size < n`), the truncation is accounted exactly with
  `TruncatedSubsampledGaussianDpEvent`, which only the PLD accountant supports: the ledger
  then uses PLD whatever accountant was asked for.
- Fixed or shuffled batches: no amplification by sampling is claimed. Each example is used at
  most once per pass over the data, so the run is `passes` Gaussian mechanisms of sensitivity
  C. A pass cut short counts as a whole one; a logical batch that straddles two passes (gradient
  accumulation) counts as two more (an example in both halves has sensitivity 2C, which is four
  Gaussian compositions instead of two).

- Unattributed steps: noisy steps taken outside `fit()` (`train_on_batch`, custom loops with
  `compute_dp_gradients`), or restored steps (`iterations` of a loaded optimizer) that no ledger
  explains. Nothing says which examples they used, so each counts as one Gaussian mechanism of
  sensitivity C on every example.

Microbatching of more than one example per microbatch doubles the sensitivity, accounted as
halving the noise multiplier (as TF Privacy does).

Ledgers only grow. Every segment has an id; ledgers (the model's, a ledger file's, two
processes' appends to one file) are merged by taking, for each id, the segment with the most
steps, so a merge never lowers a count and never counts one segment twice. A segment loaded from
a saved ledger is never extended: new steps open a new segment, so two runs resumed from one
checkpoint add up instead of overwriting each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import os
import secrets
import warnings
from typing import Any

import dp_accounting

from pydp_r import accounting

POISSON = "poisson"
SHUFFLED = "shuffled"
UNATTRIBUTED = "unattributed"
SAMPLINGS = (POISSON, SHUFFLED, UNATTRIBUTED)
# The privacy unit: what one adjacent dataset adds or removes.
EXAMPLE = "example"
USER = "user"
UNITS = (EXAMPLE, USER)

# PLD discretization of the ledger: pessimistic (an upper bound), within about 1e-4 of the
# finer default in epsilon, and ten times faster, so that budgets can be searched each fit().
_PLD_VALUE_DISCRETIZATION = 1e-3


def _check_field(name: str, value: Any, types: Any, low: float, high: float | None = None) -> None:
    """A ledger field of the right type in [low, high] (a saved ledger may have been edited)."""
    ok = isinstance(value, types) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) if ok and isinstance(value, float) else ok
    if ok and not (low <= value and (high is None or value <= high)):
        ok = False
    if not ok:
        upper = "" if high is None else f", {high:g}]"
        valid = f"[{low:g}{upper}" if upper else f">= {low:g}"
        raise ValueError(f"{name} must be a number {valid}; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of noisy steps with one sampling scheme and one noise multiplier.

    Attributes:
        sampling: "poisson", "shuffled" (fixed or shuffled batches, no amplification) or
            "unattributed" (steps with no known input: each a Gaussian mechanism).
        noise_multiplier: Noise std over the clip the traced step used, >= 0.
        used_microbatching: Whether microbatches held more than one example.
        steps: Noisy updates (releases) taken, >= 0.
        n: Training examples (Poisson: the dataset size sampled from; shuffled: None if it
            was never known).
        sampling_rate: Poisson inclusion probability q, else None.
        max_batch_size: Poisson batches' fixed size (truncation when < n), else None.
        passes: Shuffled: Gaussian compositions counted (passes over the data, partial passes
            and straddles included); 0 for Poisson.
        largest_batch: Largest batch seen (examples, padding excluded), for the record.
        epochs: Keras epochs this segment covers (begun, including partial ones).
        presumed: True when the steps were not observed but inferred (restored `iterations`
            that this ledger did not record, seen in a `fit()`): counted as if they ran with
            that fit's settings.
        segment_id: Identity for merging ledgers ("" until the ledger assigns one).
        origin: Lineage id of the optimizer whose steps these are (0: unknown).
        unit: The privacy unit: "example", or "user" (Poisson batches of users, each user's
            examples clipped together; then n, sampling_rate and max_batch_size count users).
        examples_per_unit: Users: the most examples a user brings to one step. Examples: the
            most examples one user has in the data when the data named its users (the group
            size for a per-user bound by group privacy), else 1.
        shard_sizes: Poisson batches drawn by several workers, each from its own shard of the
            units (`distributed_poisson_batches`): the units in each shard (summing to n),
            each shard sampled at rate q and cut to `max_batch_size` on its own. None for one
            sampler over all n.
    """

    sampling: str
    noise_multiplier: float
    used_microbatching: bool
    steps: int = 0
    n: int | None = None
    sampling_rate: float | None = None
    max_batch_size: int | None = None
    passes: int = 0
    largest_batch: int | None = None
    epochs: int = 0
    presumed: bool = False
    segment_id: str = ""
    origin: int = 0
    unit: str = EXAMPLE
    examples_per_unit: int = 1
    shard_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.shard_sizes, list):  # from JSON
            object.__setattr__(self, "shard_sizes", tuple(self.shard_sizes))
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; received {self.sampling!r}.")
        if self.unit not in UNITS or (self.unit == USER and self.sampling != POISSON):
            raise ValueError(
                f"unit must be one of {UNITS} ('user' only for Poisson batches of users); "
                f"received {self.unit!r} for sampling {self.sampling!r}."
            )
        _check_field("examples_per_unit", self.examples_per_unit, int, 1)
        _check_field("noise_multiplier", self.noise_multiplier, (int, float), 0, math.inf)
        for name in ("steps", "passes", "epochs", "origin"):
            _check_field(name, getattr(self, name), int, 0)
        for name in ("n", "max_batch_size", "largest_batch"):
            if getattr(self, name) is not None:
                _check_field(name, getattr(self, name), int, 1)
        if self.sampling_rate is not None:
            _check_field("sampling_rate", self.sampling_rate, (int, float), 0, 1)
        if self.sampling == POISSON and None in (self.n, self.sampling_rate):
            raise ValueError("a poisson segment needs n and sampling_rate.")
        for name in ("used_microbatching", "presumed"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; received {getattr(self, name)!r}.")
        if not isinstance(self.segment_id, str):
            raise ValueError(f"segment_id must be a string; received {self.segment_id!r}.")
        if self.shard_sizes is not None:
            self._check_shard_sizes()

    def _check_shard_sizes(self) -> None:
        sizes = self.shard_sizes
        if not isinstance(sizes, tuple) or not sizes or self.sampling != POISSON:
            raise ValueError(
                "shard_sizes must be a non-empty list of units per shard, for Poisson batches "
                f"only; received {sizes!r} for sampling {self.sampling!r}."
            )
        for size in sizes:
            _check_field("shard_sizes[...]", size, int, 1)
        if sum(sizes) != self.n:
            raise ValueError(
                f"shard_sizes must add up to n = {self.n}; received {list(sizes)} "
                f"(sum {sum(sizes)})."
            )

    @property
    def shards(self) -> int:
        """Samplers the units were split between (1 without shards)."""
        return 1 if self.shard_sizes is None else len(self.shard_sizes)

    def units_sampled_together(self, shard: int = 0) -> int | None:
        """Units one sampler draws from: n, or with shards the size of shard `shard`."""
        return self.n if self.shard_sizes is None else self.shard_sizes[shard]

    @property
    def truncated(self) -> bool:
        """Whether a Poisson batch could have been cut to its fixed size."""
        if self.sampling != POISSON or self.max_batch_size is None or self.n is None:
            return False
        return self.max_batch_size < max(self.shard_sizes or (self.n,))

    @property
    def effective_noise_multiplier(self) -> float:
        return self.noise_multiplier / 2 if self.used_microbatching else self.noise_multiplier

    def same_mechanism(self, other: Segment) -> bool:
        """Whether `other` continues this segment (same sampling, noise and data)."""
        keys = ("sampling", "noise_multiplier", "used_microbatching", "n", "sampling_rate")
        keys += ("max_batch_size", "presumed", "origin", "unit", "examples_per_unit")
        keys += ("shard_sizes",)
        return all(getattr(self, key) == getattr(other, key) for key in keys)

    def dp_event(self, shard: int = 0) -> dp_accounting.DpEvent:
        """The `dp_accounting` event of this segment (`NoOpDpEvent` when nothing ran).

        Args:
            shard: With `shard_sizes`, the shard whose units the event is for, in
                [0, shards): a unit's steps are its own shard's sampler (the other shards'
                batches do not depend on it), so each shard has its own event.
        """
        sigma = self.effective_noise_multiplier
        if self.sampling == UNATTRIBUTED:
            if self.steps == 0:
                return dp_accounting.NoOpDpEvent()
            return dp_accounting.SelfComposedDpEvent(
                dp_accounting.GaussianDpEvent(sigma), self.steps
            )
        if self.sampling == SHUFFLED:
            if self.passes == 0:
                return dp_accounting.NoOpDpEvent()
            return dp_accounting.SelfComposedDpEvent(
                dp_accounting.GaussianDpEvent(sigma), self.passes
            )
        if self.steps == 0:
            return dp_accounting.NoOpDpEvent()
        sampled_together = self.units_sampled_together(shard)
        if self.max_batch_size is not None and self.max_batch_size < sampled_together:
            event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
                dataset_size=sampled_together,
                sampling_probability=self.sampling_rate,
                truncated_batch_size=self.max_batch_size,
                noise_multiplier=sigma,
            )
        else:
            event = dp_accounting.PoissonSampledDpEvent(
                self.sampling_rate, dp_accounting.GaussianDpEvent(sigma)
            )
        return dp_accounting.SelfComposedDpEvent(event, self.steps)

    def describe(self) -> str:
        """One line in plain words."""
        noise = f"noise multiplier {self.noise_multiplier:g}" + (
            " (microbatches: sensitivity doubled)" if self.used_microbatching else ""
        )
        if self.sampling == POISSON:
            size = (
                f", fixed size {self.max_batch_size} (truncation accounted)"
                if self.truncated
                else ""
            )
            if self.shard_sizes is not None:
                size += (
                    f", drawn by {self.shards} workers from shards of "
                    f"{'/'.join(map(str, self.shard_sizes))}"
                )
            if self.unit == USER:
                text = (
                    f"{self.steps} steps of Poisson samples of users (rate "
                    f"{self.sampling_rate:.6g} of {self.n} users{size}, up to "
                    f"{self.examples_per_unit} examples each, clipped per user), {noise}"
                )
            else:
                users = (
                    f", at most {self.examples_per_unit} examples per user"
                    if self.examples_per_unit > 1
                    else ""
                )
                text = (
                    f"{self.steps} steps of Poisson batches (rate {self.sampling_rate:.6g} of "
                    f"n = {self.n}{size}{users}), {noise}"
                )
        elif self.sampling == UNATTRIBUTED:
            text = (
                f"{self.steps} steps with no recorded input (outside fit(), or restored and "
                f"unexplained), each accounted as a Gaussian mechanism on every example, {noise}"
            )
        else:
            of_n = f" of n = {self.n}" if self.n is not None else ""
            text = (
                f"{self.steps} steps of fixed or shuffled batches{of_n}, accounted as "
                f"{self.passes} passes without amplification by sampling, {noise}"
            )
        return text + (" [presumed: resumed past this ledger]" if self.presumed else "")


class PrivacyLedger:
    """The segments of noisy steps a DP optimizer took, in order, and their epsilon.

    Attributes:
        segments: The `Segment`s so far (the last one may still be growing).
    """

    def __init__(self, segments: list[Segment] | None = None) -> None:
        self.segments: list[Segment] = []
        # Segments this object opened, which alone it may extend; the session tag makes their
        # ids unique across processes that resume one saved ledger.
        self._extendable: set[str] = set()
        self._session = secrets.token_hex(6)
        for segment in segments or []:
            self.merge_segment(segment)

    @classmethod
    def from_config(cls, config: Any) -> PrivacyLedger:
        """A ledger from `get_config()`'s list of dicts (None or [] for an empty one).

        Raises:
            ValueError: For a config that is not a list of valid segment dicts.
        """
        if isinstance(config, PrivacyLedger):
            return config.copy()
        if config is None:
            return cls()
        if not isinstance(config, (list, tuple)):
            raise ValueError(
                f"privacy_ledger must be a list of segment dicts; received {type(config).__name__}."
            )
        segments = []
        for number, item in enumerate(config):
            if not isinstance(item, dict):
                raise ValueError(
                    f"privacy_ledger segment {number} must be a dict; received {item!r}."
                )
            try:
                segments.append(Segment(**item))
            except TypeError as error:  # unknown or missing fields
                raise ValueError(f"privacy_ledger segment {number}: {error}.") from None
            except ValueError as error:
                raise ValueError(f"privacy_ledger segment {number}: {error}") from None
        return cls(segments)

    def copy(self) -> PrivacyLedger:
        """An independent copy that assigns the same ids as this ledger would."""
        copied = PrivacyLedger()
        copied.segments = list(self.segments)
        copied._extendable = set(self._extendable)
        copied._session = self._session
        return copied

    def get_config(self) -> list[dict[str, Any]]:
        """JSON-serializable form, one dict per segment."""
        return [dataclasses.asdict(segment) for segment in self.segments]

    @property
    def steps(self) -> int:
        """Noisy updates recorded, over all segments."""
        return sum(segment.steps for segment in self.segments)

    def steps_of(self, origin: int) -> int:
        """Noisy updates recorded for the optimizer lineage `origin`."""
        return sum(segment.steps for segment in self.segments if segment.origin == origin)

    @property
    def unit(self) -> str:
        """What the epsilon protects: "user" when every step was user-level, else "example"
        (a user-level guarantee is also one per example)."""
        ran = [segment for segment in self.segments if segment.steps]
        return USER if ran and all(segment.unit == USER for segment in ran) else EXAMPLE

    @property
    def passes(self) -> int:
        """Passes (Gaussian compositions) of fixed or shuffled batches, over all segments."""
        return sum(segment.passes for segment in self.segments)

    @property
    def epochs(self) -> int:
        """Keras epochs recorded (begun), over all segments."""
        return sum(segment.epochs for segment in self.segments)

    def record(self, segment: Segment) -> None:
        """Add `segment`'s steps, extending the last segment when it continues it and this
        ledger opened it; otherwise as a new segment with a fresh id."""
        last = self.segments[-1] if self.segments else None
        if (
            last is not None
            and last.segment_id in self._extendable
            and last.same_mechanism(segment)
        ):
            largest = [b for b in (last.largest_batch, segment.largest_batch) if b is not None]
            self.segments[-1] = dataclasses.replace(
                last,
                steps=last.steps + segment.steps,
                passes=last.passes + segment.passes,
                epochs=last.epochs + segment.epochs,
                largest_batch=max(largest) if largest else None,
            )
            return
        segment_id = f"{self._session}.{len(self.segments)}"
        self.segments.append(dataclasses.replace(segment, segment_id=segment_id))
        self._extendable.add(segment_id)

    def merge_segment(self, segment: Segment) -> None:
        """Union with one saved segment: keep, per id, the one with the most steps and passes.

        A segment without an id (saved by an older pydp_r) is added as it is.
        """
        for index, mine in enumerate(self.segments):
            if segment.segment_id and mine.segment_id == segment.segment_id:
                if (segment.steps, segment.passes) > (mine.steps, mine.passes):
                    self.segments[index] = segment
                    self._extendable.discard(segment.segment_id)
                return
        self.segments.append(segment)

    def merge(self, other: PrivacyLedger) -> None:
        """Union with another ledger (a ledger file's, another process's): counts only go up."""
        for segment in other.segments:
            self.merge_segment(segment)

    def accountant_for(self, accountant: str, extra: Segment | None = None) -> str:
        """The accountant that can account every segment: PLD once a truncated one is there."""
        segments = self.segments + ([extra] if extra is not None else [])
        if any(segment.truncated for segment in segments):
            return "pld"
        return accountant

    def epsilon(self, delta: float, accountant: str = "rdp", extra: Segment | None = None) -> float:
        """Epsilon at `delta` of everything recorded (plus `extra`, a segment not yet run).

        Args:
            delta: Target delta, in (0, 1).
            accountant: "rdp" or "pld"; PLD is used anyway when a segment has truncation.
            extra: A hypothetical next segment (for budget planning), or None.

        Returns:
            Epsilon >= 0; 0 when nothing ran; `math.inf` when a step ran without noise.
        """
        segments = self.segments + ([extra] if extra is not None else [])
        placements = _events_per_placement(segments)
        if not any(placements):
            return 0.0
        if any(segment.effective_noise_multiplier == 0 for segment in segments if segment.steps):
            return math.inf
        name = self.accountant_for(accountant, extra)
        return max(_composed_epsilon(events, delta, name) for events in placements)

    def user_epsilon(self, delta: float, accountant: str = "rdp") -> float | None:
        """Epsilon per user at `delta`.

        The epsilon itself when every step was user-level; otherwise, when every step's data
        named its users, the group-privacy bound for the most examples one user had (far
        weaker); None when some step's data did not say whose examples were whose.
        """
        ran = [segment for segment in self.segments if segment.steps]
        if self.unit == USER or not ran:
            return self.epsilon(delta, accountant)
        if any(segment.unit == EXAMPLE and segment.examples_per_unit == 1 for segment in ran):
            return None
        group_size = max(segment.examples_per_unit for segment in ran)
        return accounting.group_privacy_epsilon(
            lambda example_delta: self.epsilon(example_delta, accountant), delta, group_size
        )

    def describe(self) -> str:
        """The segments in plain words, one line each."""
        if not self.segments:
            return "No noisy steps recorded."
        return "\n".join(f"- {segment.describe()}" for segment in self.segments)

    def __repr__(self) -> str:
        return f"PrivacyLedger({self.segments!r})"


def _events_per_placement(segments: list[Segment]) -> list[list[dp_accounting.DpEvent]]:
    """The events of `segments` for each shard a unit can be in; one list without shards.

    A unit stays in one shard for every segment drawn by the same number of workers (its shard
    is a hash of its id), so those segments take the same shard; segments with different
    numbers of workers are combined in every way. Placements that give the same events are
    computed once.
    """
    worker_counts = sorted({segment.shards for segment in segments if segment.shard_sizes})
    placements = []
    for shards in itertools.product(*(range(count) for count in worker_counts)):
        shard_of = dict(zip(worker_counts, shards, strict=True))
        events = [
            segment.dp_event(shard_of.get(segment.shards, 0) if segment.shard_sizes else 0)
            for segment in segments
        ]
        events = [event for event in events if not isinstance(event, dp_accounting.NoOpDpEvent)]
        if events not in placements:
            placements.append(events)
    return placements


def _composed_epsilon(events: list[dp_accounting.DpEvent], delta: float, accountant: str) -> float:
    """Epsilon at `delta` of `events` composed, by the "rdp" or "pld" accountant."""
    if accountant == "pld":
        composed = dp_accounting.pld.PLDAccountant(
            value_discretization_interval=_PLD_VALUE_DISCRETIZATION
        )
    else:
        composed = dp_accounting.rdp.RdpAccountant()
    composed.compose(dp_accounting.ComposedDpEvent(events))
    return float(composed.get_epsilon(delta))


@dataclasses.dataclass(frozen=True)
class PoissonSampling:
    """What a `poisson_batches` dataset is: the accountant's view of its sampling.

    Attributes:
        n: Units sampled from (examples, or users for user-level batches), >= 1.
        sampling_rate: Inclusion probability q of each unit in each batch, in (0, 1].
        max_batch_size: Most units per batch; a draw above it is cut (truncation).
        steps_per_epoch: Batches per pass over the dataset.
        unit: "example", or "user": each sampled user brings up to `examples_per_unit` of
            their examples, as one block of rows that the DP step clips as one.
        examples_per_unit: Rows per unit in a batch (1 for examples).
        shard_sizes: Units per worker's shard when each worker samples its own shard
            (`distributed_poisson_batches`; `max_batch_size` is then per shard), else None.
    """

    n: int
    sampling_rate: float
    max_batch_size: int
    steps_per_epoch: int
    unit: str = EXAMPLE
    examples_per_unit: int = 1
    shard_sizes: tuple[int, ...] | None = None

    @property
    def units_per_batch(self) -> int:
        """Units in one global batch, over every shard's."""
        return self.max_batch_size * (1 if self.shard_sizes is None else len(self.shard_sizes))


class LedgerFileError(ValueError):
    """A ledger file that cannot be read, validated or written; the message names the file."""


def check_ledger_path(path: Any) -> str:
    """A usable ledger file path: a non-empty path in an existing, writable directory.

    Raises:
        LedgerFileError: Naming the path and what to fix.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise LedgerFileError(f"ledger_path must be a non-empty file path; received {path!r}.")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise LedgerFileError(f"ledger_path {path!r} is a directory; give a file path in it.")
    if not os.path.isdir(directory):
        raise LedgerFileError(
            f"ledger_path {path!r}: directory {directory!r} does not exist; create it first."
        )
    if not os.access(directory, os.W_OK) or (
        os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK)
    ):
        raise LedgerFileError(f"ledger_path {path!r} is not readable and writable by this user.")
    return path


class HalfWrittenLineWarning(UserWarning):
    """Warned when a ledger file ends in a half-written line (a crash during a write)."""


def append_to_file(path: str | os.PathLike, ledger: PrivacyLedger, **fields: Any) -> None:
    """Append one JSON line with the whole ledger (and `fields`, e.g. the model's name) to
    `path`, creating it if needed. Earlier lines are never rewritten.

    The line is written whole under an exclusive lock and fsynced; a write that fails (a full
    disk) is cut back off, so the file never ends in a half line this call wrote.

    Raises:
        LedgerFileError: When the line cannot be written; the file is as it was.
    """
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(), **fields}
    record["noisy_steps"] = ledger.steps
    record["summary"] = ledger.describe()
    record["segments"] = ledger.get_config()
    line = (json.dumps(record) + "\n").encode("utf-8")
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise LedgerFileError(f"cannot open ledger_path {str(path)!r}: {error}.") from None
    try:
        _lock(descriptor, exclusive=True)
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            # A half-written last line (a crash during a write) cannot be read: cut it off so
            # that this record and later ones stand on their own lines.
            complete = os.pread(descriptor, size, 0).rfind(b"\n") + 1
            os.ftruncate(descriptor, complete)
            warnings.warn(
                f"ledger_path {str(path)!r} ended in a half-written line (a crash during a "
                f"write); its {size - complete} bytes were removed before appending.",
                HalfWrittenLineWarning,
                stacklevel=2,
            )
            size = complete
        try:
            written = 0
            while written < len(line):
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, size)
            raise LedgerFileError(
                f"cannot write the privacy ledger to {str(path)!r}: {error}. The file is "
                "unchanged; free space (or choose another ledger_path) and fit() again: the "
                "model's own ledger (saved in .keras files) still holds every step."
            ) from None
    finally:
        os.close(descriptor)


def _lock(descriptor: int, exclusive: bool) -> None:
    """An advisory lock on an open file (POSIX; a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: appends of whole lines are still atomic enough there
        return
    fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def read_file(path: str | os.PathLike) -> PrivacyLedger | None:
    """Every ledger recorded in a ledger file, merged (each segment once, at its largest count);
    None when the file does not exist.

    A last line cut short by a crash is ignored with a `HalfWrittenLineWarning` naming it.

    Raises:
        LedgerFileError: When a line is not a valid ledger record; the message names the file
            and the line.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as file:
            _lock(file.fileno(), exclusive=False)
            lines = file.read().split(b"\n")
    except OSError as error:
        raise LedgerFileError(f"cannot read ledger_path {str(path)!r}: {error}.") from None
    merged = PrivacyLedger()
    last_number = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("segments"), list):
                raise ValueError("no list of segments")
            merged.merge(PrivacyLedger.from_config(record["segments"]))
        except (ValueError, UnicodeDecodeError) as error:
            # Every complete line ends in a newline: a last line without one was cut short.
            if number == last_number and lines[-1].strip():
                warnings.warn(
                    f"ledger_path {str(path)!r}: line {number} is half-written (a crash during "
                    "a write) and is ignored; the lines before it are kept.",
                    HalfWrittenLineWarning,
                    stacklevel=2,
                )
                continue
            raise LedgerFileError(
                f"ledger_path {str(path)!r} is not a valid pydp_r ledger file: line {number}: "
                f"{error}. Restore the file from a backup, or give another ledger_path (never "
                "delete a ledger whose steps ran)."
            ) from None
    return merged
