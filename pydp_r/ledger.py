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

Microbatching of more than one example per microbatch doubles the sensitivity, accounted as
halving the noise multiplier (as TF Privacy does).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Any

import dp_accounting

POISSON = "poisson"
SHUFFLED = "shuffled"
SAMPLINGS = (POISSON, SHUFFLED)

# PLD discretization of the ledger: pessimistic (an upper bound), within about 1e-4 of the
# finer default in epsilon, and ten times faster, so that budgets can be searched each fit().
_PLD_VALUE_DISCRETIZATION = 1e-3


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of noisy steps with one sampling scheme and one noise multiplier.

    Attributes:
        sampling: "poisson" or "shuffled" (fixed or shuffled batches, no amplification).
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
        presumed: True when the steps were not observed but inferred (a resumed `fit()` with
            `initial_epoch` past what this ledger recorded): counted as if they ran with the
            current settings.
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

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; received {self.sampling!r}.")

    @property
    def truncated(self) -> bool:
        """Whether a Poisson batch could have been cut to its fixed size."""
        return (
            self.sampling == POISSON
            and self.max_batch_size is not None
            and self.n is not None
            and self.max_batch_size < self.n
        )

    @property
    def effective_noise_multiplier(self) -> float:
        return self.noise_multiplier / 2 if self.used_microbatching else self.noise_multiplier

    def same_mechanism(self, other: Segment) -> bool:
        """Whether `other` continues this segment (same sampling, noise and data)."""
        keys = ("sampling", "noise_multiplier", "used_microbatching", "n", "sampling_rate")
        keys += ("max_batch_size", "presumed")
        return all(getattr(self, key) == getattr(other, key) for key in keys)

    def dp_event(self) -> dp_accounting.DpEvent:
        """The `dp_accounting` event of this segment (`NoOpDpEvent` when nothing ran)."""
        sigma = self.effective_noise_multiplier
        if self.sampling == SHUFFLED:
            if self.passes == 0:
                return dp_accounting.NoOpDpEvent()
            return dp_accounting.SelfComposedDpEvent(
                dp_accounting.GaussianDpEvent(sigma), self.passes
            )
        if self.steps == 0:
            return dp_accounting.NoOpDpEvent()
        if self.truncated:
            event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
                dataset_size=self.n,
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
            text = (
                f"{self.steps} steps of Poisson batches (rate {self.sampling_rate:.6g} of "
                f"n = {self.n}{size}), {noise}"
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
        self.segments: list[Segment] = list(segments or [])

    @classmethod
    def from_config(cls, config: Any) -> PrivacyLedger:
        """A ledger from `get_config()`'s list of dicts (None or [] for an empty one)."""
        if isinstance(config, PrivacyLedger):
            return PrivacyLedger(config.segments)
        if config is None:
            return cls()
        if not isinstance(config, (list, tuple)):
            raise ValueError(
                f"privacy_ledger must be a list of segment dicts; received {type(config).__name__}."
            )
        return cls([Segment(**dict(item)) for item in config])

    def get_config(self) -> list[dict[str, Any]]:
        """JSON-serializable form, one dict per segment."""
        return [dataclasses.asdict(segment) for segment in self.segments]

    @property
    def steps(self) -> int:
        """Noisy updates recorded, over all segments."""
        return sum(segment.steps for segment in self.segments)

    @property
    def passes(self) -> int:
        """Passes (Gaussian compositions) of fixed or shuffled batches, over all segments."""
        return sum(segment.passes for segment in self.segments)

    @property
    def epochs(self) -> int:
        """Keras epochs recorded (begun), over all segments."""
        return sum(segment.epochs for segment in self.segments)

    def record(self, segment: Segment) -> None:
        """Add `segment`'s steps, merging them into the last segment when it continues it."""
        if self.segments and self.segments[-1].same_mechanism(segment):
            last = self.segments[-1]
            largest = [b for b in (last.largest_batch, segment.largest_batch) if b is not None]
            self.segments[-1] = dataclasses.replace(
                last,
                steps=last.steps + segment.steps,
                passes=last.passes + segment.passes,
                epochs=last.epochs + segment.epochs,
                largest_batch=max(largest) if largest else None,
            )
        else:
            self.segments.append(segment)

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
        events = [segment.dp_event() for segment in segments]
        events = [event for event in events if not isinstance(event, dp_accounting.NoOpDpEvent)]
        if not events:
            return 0.0
        if any(segment.effective_noise_multiplier == 0 for segment in segments if segment.steps):
            return math.inf
        if self.accountant_for(accountant, extra) == "pld":
            composed = dp_accounting.pld.PLDAccountant(
                value_discretization_interval=_PLD_VALUE_DISCRETIZATION
            )
        else:
            composed = dp_accounting.rdp.RdpAccountant()
        composed.compose(dp_accounting.ComposedDpEvent(events))
        return float(composed.get_epsilon(delta))

    def describe(self) -> str:
        """The segments in plain words, one line each."""
        if not self.segments:
            return "No noisy steps recorded."
        return "\n".join(f"- {segment.describe()}" for segment in self.segments)

    def __repr__(self) -> str:
        return f"PrivacyLedger({self.segments!r})"


@dataclasses.dataclass(frozen=True)
class PoissonSampling:
    """What a `poisson_batches` dataset is: the accountant's view of its sampling.

    Attributes:
        n: Examples sampled from, >= 1.
        sampling_rate: Inclusion probability q of each example in each batch, in (0, 1].
        max_batch_size: Fixed batch dimension; a draw above it is cut (truncation).
        steps_per_epoch: Batches per pass over the dataset.
    """

    n: int
    sampling_rate: float
    max_batch_size: int
    steps_per_epoch: int


def append_to_file(path: str | os.PathLike, ledger: PrivacyLedger, **fields: Any) -> None:
    """Append one JSON line with the whole ledger (and `fields`, e.g. the model's name) to
    `path`, creating it if needed. Earlier lines are never rewritten."""
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(), **fields}
    record["noisy_steps"] = ledger.steps
    record["summary"] = ledger.describe()
    record["segments"] = ledger.get_config()
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def read_file(path: str | os.PathLike) -> PrivacyLedger | None:
    """The ledger of the last line of a ledger file, or None when the file does not exist.

    Raises:
        ValueError: When the file is not a ledger file (a line that is not such JSON).
    """
    if not os.path.exists(path):
        return None
    last = None
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                last = json.loads(line)["segments"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"ledger_path {str(path)!r} is not a pydp_r ledger file: line {number} "
                    f"is not a ledger record ({error})."
                ) from None
    return None if last is None else PrivacyLedger.from_config(last)
