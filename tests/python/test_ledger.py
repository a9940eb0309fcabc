"""The privacy ledger and its file: merges only ever add, each segment counted once, and a file
that is cut short, edited or shared by several processes never lowers a count."""

import json
import multiprocessing
import os

import dp_accounting
import pytest

from pydp_r import ledger
from pydp_r.ledger import PrivacyLedger, Segment


def shuffled(passes, noise_multiplier=1.0, origin=7):
    return Segment(
        "shuffled", noise_multiplier, False, steps=4 * passes, n=64, passes=passes, origin=origin
    )


def gaussian_epsilon(noise_multiplier, compositions, delta=1e-3):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), compositions
    )
    return dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)


def test_merging_keeps_each_segment_once_at_its_largest_count():
    mine = PrivacyLedger()
    mine.record(shuffled(2))
    saved = PrivacyLedger.from_config(mine.get_config())
    mine.record(shuffled(1))  # extends the same segment: 3 passes
    saved.merge(mine)
    saved.merge(PrivacyLedger.from_config(mine.get_config()))
    assert saved.passes == 3 and len(saved.segments) == 1
    mine.merge(saved)
    assert mine.passes == 3


def test_two_runs_resumed_from_one_saved_ledger_add_up():
    original = PrivacyLedger()
    original.record(shuffled(2))
    config = original.get_config()
    first, second = PrivacyLedger.from_config(config), PrivacyLedger.from_config(config)
    first.record(shuffled(1))
    second.record(shuffled(5))
    # A loaded segment is never extended: each run opens its own, with its own id.
    first.merge(second)
    assert first.passes == 2 + 1 + 5


def test_a_ledger_from_another_run_is_composed_not_adopted():
    ours, theirs = PrivacyLedger(), PrivacyLedger()
    ours.record(shuffled(3))
    theirs.record(shuffled(1))
    before = ours.epsilon(1e-3)
    ours.merge(theirs)
    assert ours.epsilon(1e-3) == pytest.approx(gaussian_epsilon(1.0, 4), rel=1e-9)
    assert ours.epsilon(1e-3) > before


def test_unattributed_steps_are_a_gaussian_mechanism_each():
    record = PrivacyLedger([Segment("unattributed", 2.0, False, steps=10)])
    assert record.epsilon(1e-3) == pytest.approx(gaussian_epsilon(2.0, 10), rel=1e-9)
    assert "10 steps with no recorded input" in record.describe()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": -1}, "steps"),
        ({"passes": 1.5}, "passes"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
        ({"n": 0}, "n must"),
        ({"used_microbatching": "no"}, "used_microbatching"),
        ({"sampling": "fixed"}, "sampling"),
        ({"shard_sizes": [32, 32]}, "shard_sizes must be .* for Poisson batches only"),
    ],
)
def test_a_segment_with_a_value_out_of_range_is_refused(changes, message):
    fields = {**shuffled(1).__dict__, **changes}
    with pytest.raises(ValueError, match=message):
        Segment(**fields)
    with pytest.raises(ValueError, match=f"privacy_ledger segment 0: .*{message}"):
        PrivacyLedger.from_config([fields])


def test_file_appends_merge_and_a_reset_line_lowers_nothing(tmp_path):
    path = tmp_path / "ledger.jsonl"
    first = PrivacyLedger()
    first.record(shuffled(2))
    ledger.append_to_file(path, first)
    with open(path, "a") as file:
        file.write(json.dumps({"segments": []}) + "\n")  # a last line that used to reset
    assert ledger.read_file(path).passes == 2
    with open(path, "a") as file:
        file.write("null\n")
    with pytest.raises(ledger.LedgerFileError, match=r"ledger.jsonl.*line 3"):
        ledger.read_file(path)


def test_a_half_written_last_line_is_named_and_skipped_and_the_next_write_stands(tmp_path):
    path = tmp_path / "ledger.jsonl"
    record = PrivacyLedger()
    record.record(shuffled(2))
    ledger.append_to_file(path, record)
    with open(path, "a") as file:
        file.write('{"segments": [{"sampling": "shuf')  # a crash during a write
    with pytest.warns(ledger.HalfWrittenLineWarning, match="line 2 is half-written"):
        assert ledger.read_file(path).passes == 2
    record.record(shuffled(1))
    with pytest.warns(ledger.HalfWrittenLineWarning, match="half-written line"):
        ledger.append_to_file(path, record)
    assert ledger.read_file(path).passes == 3
    assert len(path.read_text().splitlines()) == 2


def test_bad_values_in_a_file_name_the_file_and_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    bad = {**shuffled(1).__dict__, "steps": -5}
    path.write_text(json.dumps({"segments": [bad]}) + "\n")
    with pytest.raises(ledger.LedgerFileError, match=r"ledger.jsonl.*line 1.*steps"):
        ledger.read_file(path)


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    record = PrivacyLedger()
    record.record(shuffled(1))
    ledger.append_to_file(path, record)
    before = path.read_bytes()
    real_write = os.write

    def disk_full_after_ten_bytes(descriptor, data):
        real_write(descriptor, data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full_after_ten_bytes)
    with pytest.raises(ledger.LedgerFileError, match="No space left.*file is unchanged"):
        ledger.append_to_file(path, record)
    monkeypatch.undo()
    assert path.read_bytes() == before


@pytest.mark.parametrize("bad", ["", 3])
def test_a_bad_ledger_path_is_refused_with_its_name(bad):
    with pytest.raises(ledger.LedgerFileError, match="ledger_path must be a non-empty"):
        ledger.check_ledger_path(bad)


def test_a_ledger_path_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ledger.LedgerFileError, match="does not exist"):
        ledger.check_ledger_path(tmp_path / "nowhere" / "ledger.jsonl")


def _append_many(path, origin, count):
    record = PrivacyLedger()
    for _ in range(count):
        record.record(shuffled(1, origin=origin))
        ledger.append_to_file(path, record)


@pytest.mark.slow
def test_two_processes_appending_to_one_file_both_count(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, o, 30)) for o in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    merged = ledger.read_file(path)
    assert merged.passes == 60 and len(merged.segments) == 2


def sharded(steps, shard_sizes, max_batch_size=12, sampling_rate=0.05, origin=7):
    return Segment(
        "poisson",
        1.0,
        False,
        steps=steps,
        n=sum(shard_sizes),
        sampling_rate=sampling_rate,
        max_batch_size=max_batch_size,
        unit="user",
        examples_per_unit=4,
        shard_sizes=tuple(shard_sizes),
        origin=origin,
    )


def truncated_epsilon(shard_steps, delta=1e-5, sampling_rate=0.05, max_batch_size=12):
    """dp_accounting's epsilon of truncated Poisson steps on shards: [(shard size, steps)]."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for size, steps in shard_steps:
        event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
            size, sampling_rate, max_batch_size, 1.0
        )
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return accountant.get_epsilon(delta)


def test_sharded_steps_are_accounted_for_the_worst_shard_a_user_can_be_in():
    """Each worker samples its own shard: a user's steps are their shard's truncated Poisson
    mechanism, so the epsilon is the largest over the shards, not that of one sampler over
    all users (which would be smaller here: 230 users at rate 0.05 rarely fill 12 x 2)."""
    recorded = PrivacyLedger([sharded(300, (130, 100))])
    per_shard = [truncated_epsilon([(130, 300)]), truncated_epsilon([(100, 300)])]
    assert per_shard[0] != pytest.approx(per_shard[1], rel=1e-3)
    assert recorded.epsilon(1e-5) == pytest.approx(max(per_shard), rel=1e-6)
    one_sampler = Segment(
        "poisson", 1.0, False, steps=300, n=230, sampling_rate=0.05, max_batch_size=24, unit="user"
    )
    assert recorded.epsilon(1e-5) > PrivacyLedger([one_sampler]).epsilon(1e-5)
    # A user keeps their shard while the number of workers stays: the shards' steps compose
    # shard by shard; with another number of workers every combination is a candidate.
    two_runs = PrivacyLedger([sharded(300, (130, 100)), sharded(200, (120, 110), origin=8)])
    aligned = [
        truncated_epsilon([(130, 300), (120, 200)]),
        truncated_epsilon([(100, 300), (110, 200)]),
    ]
    assert two_runs.epsilon(1e-5) == pytest.approx(max(aligned), rel=1e-6)
    regrouped = PrivacyLedger([sharded(300, (130, 100)), sharded(200, (80, 80, 70), origin=8)])
    combinations = [
        truncated_epsilon([(first, 300), (second, 200)])
        for first in (130, 100)
        for second in (80, 70)
    ]
    assert regrouped.epsilon(1e-5) == pytest.approx(max(combinations), rel=1e-6)


def test_shard_sizes_survive_the_config_and_must_add_up_to_n():
    recorded = PrivacyLedger([sharded(30, (130, 100))])
    restored = PrivacyLedger.from_config(json.loads(json.dumps(recorded.get_config())))
    assert restored.segments[0].shard_sizes == (130, 100)
    assert restored.epsilon(1e-5) == recorded.epsilon(1e-5)
    assert "2 workers" in restored.describe()
    with pytest.raises(ValueError, match="shard_sizes must add up to n = 231"):
        Segment(**{**recorded.segments[0].__dict__, "n": 231})
