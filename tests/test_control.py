"""Finish detection and partition assignment, without Ray."""

from raycrawl.coordinator.phases import FinishDetector, Phase, Verdict
from raycrawl.coordinator.reports import DBWorkerReport
from raycrawl.storage.assignment import (
    Assignment,
    PartitionMove,
    Role,
    read_assignment,
    write_assignment,
)


def idle(activity, queued=0, at_gate=0):
    return DBWorkerReport(queued=queued, queued_at_gate=at_gate, in_flight=0, activity=activity)


def test_assignment_covers_every_partition_once_and_moves_one_an_epoch(tmp_path):
    first = Assignment.initial(64, 3, 2)
    parts = first.by_worker(Role.DB)
    assert sorted(p for ps in parts for p in ps) == list(range(64)) and len(parts) == 3
    assert all(p in first.owned(Role.DB, first.owners[Role.DB][p]) for p in range(64))
    assert first.owned(Role.STRATEGY, 1) == frozenset(range(1, 64, 2))
    moved = first.committed(PartitionMove(Role.STRATEGY, 1, 0, (3,)))
    assert moved.epoch == first.epoch + 1 and moved.owners[Role.STRATEGY][3] == 0
    assert first.owners[Role.STRATEGY][3] == 1 and moved.owners[Role.DB] == first.owners[Role.DB]
    write_assignment(str(tmp_path), moved)
    assert read_assignment(str(tmp_path)) == moved


def test_finish_needs_two_identical_quiet_snapshots():
    d = FinishDetector(layered=False)
    assert d.observe([idle(5), idle(7)], 0, None, False) is Verdict.CONTINUE
    assert d.observe([idle(5), idle(7)], 0, None, False) is Verdict.FINISH
    assert d.reason == "no work left"


def test_work_moved_between_reads_is_not_mistaken_for_the_end():
    # Snapshot 1 read worker 0 before a batch of worker 1 queued work into it: both look idle.
    d = FinishDetector(layered=False)
    assert d.observe([idle(5), idle(8)], 0, None, False) is Verdict.CONTINUE
    # Snapshot 2 sees worker 0's activity counter moved (and its queue): not finished.
    assert d.observe([idle(6, queued=1, at_gate=1), idle(8)], 0, None, False) is Verdict.CONTINUE


def test_in_flight_or_pending_control_blocks_finish():
    d = FinishDetector(layered=False)
    busy = DBWorkerReport(queued=0, queued_at_gate=0, in_flight=1, activity=3)
    for _ in range(3):
        assert d.observe([busy], 0, None, False) is Verdict.CONTINUE
    for _ in range(3):
        assert d.observe([idle(3)], 1, None, False) is Verdict.CONTINUE


def test_budget_and_strategy_end_the_crawl_with_work_queued():
    d = FinishDetector(layered=False)
    d.observe([idle(1, queued=10, at_gate=10)], 0, 0, False)
    assert d.observe([idle(1, queued=10, at_gate=10)], 0, 0, False) is Verdict.FINISH
    assert d.reason == "max pages reached"
    d = FinishDetector(layered=False)
    d.observe([idle(1, queued=10, at_gate=10)], 0, None, True)
    assert d.observe([idle(1, queued=10, at_gate=10)], 0, None, True) is Verdict.FINISH
    assert d.reason == "strategy finished"


def test_depth_gate_opens_layer_by_layer():
    d = FinishDetector(layered=True)
    assert d.gate == 0
    deeper = idle(4, queued=3, at_gate=0)
    d.observe([deeper], 0, None, False)
    assert d.observe([deeper], 0, None, False) is Verdict.ADVANCE_GATE and d.gate == 1
    # Right after opening, one quiet snapshot is not enough to move again.
    assert d.observe([idle(4, queued=3, at_gate=3)], 0, None, False) is Verdict.CONTINUE


def test_phase_prints_as_a_word():
    assert str(Phase.RUNNING) == "running" and Phase.FINISHED.terminal
    assert not Phase.PAUSED.terminal
