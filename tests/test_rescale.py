"""Rescaling without Ray: the goal, the moves toward it, and the move protocol with a crash of
the coordinator or of either worker at every step (``faultpoints.MOVE_POINTS``)."""

import asyncio
import dataclasses
import os
import time

import pytest

from raycrawl import faultpoints
from raycrawl.config import CrawlConfig
from raycrawl.coordinator.rescale import Rescaler, move_size, next_move, plan_goal
from raycrawl.db_worker.shard import DBShard
from raycrawl.errors import ErrorKind
from raycrawl.formats.schemas import ended_rows
from raycrawl.storage.assignment import (
    Assignment,
    PartitionMove,
    Role,
    read_assignment,
    write_assignment,
)
from raycrawl.storage.store import Store
from raycrawl.strategy_worker.runner import STRATEGY_TABLES, StrategyRunner
from raycrawl.urls import url_info
from tests.test_partitions import scoring
from tests.test_strategy import feed

P = 16


def test_the_goal_balances_by_queued_urls_and_moves_few():
    owners = (0,) * P
    queued = [0] * P
    queued[3] = 1000  # one heavy partition
    goal = plan_goal(owners, 4, queued)
    assert set(goal) == {0, 1, 2, 3}
    heavy = goal[3]
    assert goal.count(heavy) == 1  # the heavy one alone on its worker
    # even work: shares by count, and the partitions kept where they are when they may be
    even = plan_goal(tuple(p % 2 for p in range(P)), 2, [10] * P)
    assert even == tuple(p % 2 for p in range(P))
    grown = plan_goal(even, 4, [10] * P)
    assert sorted(grown.count(w) for w in range(4)) == [4, 4, 4, 4]
    assert sum(a != b for a, b in zip(even, grown)) == 8  # only what the new workers get
    shrunk = plan_goal(grown, 1, [10] * P)
    assert shrunk == (0,) * P


def test_moves_go_a_few_partitions_at_a_time_toward_the_goal():
    a = Assignment.initial(P, 1, 1)
    a = dataclasses.replace(a, goal={Role.DB: plan_goal(a.owners[Role.DB], 4, [0] * P)},
                            workers={Role.DB: 4, Role.STRATEGY: 1})
    moves = 0
    while (move := next_move(a, Role.DB)) is not None:
        assert move.source == 0 and len(move.partitions) <= move_size(P)
        a = a.committed(move)
        moves += 1
    assert a.owners[Role.DB] == a.goal[Role.DB] and moves == 6  # 12 of 16 partitions, 2 a move
    assert next_move(a, Role.STRATEGY) is None
    move = PartitionMove(Role.DB, 0, 2, (1, 2, 3, 7))
    assert str(move) == "DB partitions 1-3,7: worker 0 -> 2"
    kept = dataclasses.replace(a, moving=move)
    assert Assignment.from_dict(kept.to_dict()) == kept and kept.rescaling


class Crash(Exception):
    """A process ended at a fault point."""


class _Hook:
    def __init__(self, point: str) -> None:
        self.point, self.fired = point, False

    def __call__(self, point: str, state_dir: str) -> None:
        if point == self.point and not self.fired:
            self.fired = True
            raise Crash(point)


class _Mover:
    """A worker as a move calls it (``worker``: its DB shard or strategy runner), restarted —
    reopened from the assignment, as the actor's ``__init__`` does — when it crashes at a
    fault point."""

    kind = ""

    def __init__(self, cfg: CrawlConfig, index: int) -> None:
        self.cfg, self.index = cfg, index
        self.open()

    def open(self) -> None:
        raise NotImplementedError

    def _point(self, point: str) -> None:
        try:
            faultpoints.reach(f"{self.kind}.{point}", self.cfg.state_dir)
        except Crash:
            self.store.close()
            self.open()
            raise

    async def fence(self, partitions):
        return self.worker.fence(partitions) or 0

    async def export(self, partitions):
        copies = [self.worker.export_partition(p) for p in partitions]
        self._point("exported")
        return copies

    async def adopt(self, copies):
        for c in copies:
            self.worker.adopt_partition(c)
        self._point("adopted")

    async def sync(self):
        pass

    async def drop(self, partitions):
        for p in partitions:
            self.worker.drop_partition(p)
        self._point("dropped")


class _DBMover(_Mover):
    kind = "db-worker"

    def open(self) -> None:
        owned = read_assignment(self.cfg.state_dir).owned(Role.DB, self.index)
        self.worker = self.shard = DBShard(self.cfg, self.index, owned)
        self.store = self.shard.store

    async def sync(self):
        self.shard.take(read_assignment(self.cfg.state_dir).owned(Role.DB, self.index))


class _StrategyMover(_Mover):
    kind = "strategy-worker"

    def open(self) -> None:
        self.store = Store(f"{self.cfg.state_dir}/strategy-worker-{self.index}",
                           tables=STRATEGY_TABLES)
        self.worker = self.runner = StrategyRunner(self.cfg, self.store)


def _crawl(tmp_path):
    cfg = CrawlConfig(out=str(tmp_path / "out"), partitions=P, delay_s=5.0,
                      recrawl_after_s=3600.0)
    os.makedirs(cfg.state_dir)
    write_assignment(cfg.state_dir, Assignment.initial(P, 1, 1))
    movers = {Role.DB: [_DBMover(cfg, 0), _DBMover(cfg, 1)],
              Role.STRATEGY: [_StrategyMover(cfg, 0), _StrategyMover(cfg, 1)]}
    urls = [f"http://h{i}.test/{n}" for i in range(30) for n in range(4)]
    db = movers[Role.DB][0].shard
    db.enqueue(scoring(urls))
    db.enqueue(scoring([f"http://h{i}.test/later" for i in range(30)],
                       not_before=time.time() + 600))
    batch_id, cut = db.cut(20, None)  # some done, their hosts' delays running
    db.complete(batch_id, ended_rows([(e, ErrorKind.ROBOTS) for e in cut]), entries=cut)
    db.release_hosts({e.host for e in cut})
    runner = movers[Role.STRATEGY][0].runner
    runner.add_seeds(feed([f"http://h{i}.test/" for i in range(30)]))
    runner.commit()
    return cfg, movers, urls, {e.url for e in cut}


def _strategy_states(movers, owners):
    """URL -> state, read from each partition's owner."""
    found = {}
    for i in range(30):
        info = url_info(f"http://h{i}.test/", P)
        runner = movers[owners[info.partition]].runner
        runner.states.refresh([info.partition], [info.fingerprint])
        found[info.url] = runner.states.state(info.fingerprint)
    return found


@pytest.mark.parametrize("point", [None, *faultpoints.MOVE_POINTS])
def test_a_crash_at_any_step_of_a_move_leaves_each_partition_whole_with_one_owner(
        tmp_path, point):
    cfg, movers, urls, done = _crawl(tmp_path)
    db = movers[Role.DB]
    before_queued = db[0].shard.queue.queued + db[0].shard.queue.not_due
    states_before = _strategy_states(movers[Role.STRATEGY], (0,) * P)
    a = read_assignment(cfg.state_dir)
    a = dataclasses.replace(a, workers={Role.DB: 2, Role.STRATEGY: 2}, goal={
        role: plan_goal(a.owners[role], 2, [0] * P) for role in Role})
    write_assignment(cfg.state_dir, a)
    faultpoints.install(_Hook(point) if point else None)
    crashes = 0
    try:
        for _ in range(100):  # bounded: every step done again is a few more calls
            a = read_assignment(cfg.state_dir)  # (a coordinator restarted reads it anew)
            rescaler = Rescaler(cfg.state_dir, lambda role, w: movers[role][w])
            try:
                if a.moving is not None:
                    asyncio.run(rescaler.move(a))
                    continue
                move = next_move(a, Role.DB) or next_move(a, Role.STRATEGY)
                if move is None:
                    break
                rescaler.record(a, move)
            except Crash:
                crashes += 1
    finally:
        faultpoints.install(None)
    assert crashes == (1 if point else 0)
    a = read_assignment(cfg.state_dir)
    assert a.moving is None and a.owners == a.goal
    # every partition's keys are at its owner only, no fence is left, counts add up
    for role in Role:
        stores = [m.store for m in movers[role]]
        for p in range(P):
            owner = a.owners[role][p]
            assert stores[1 - owner].count(p) == 0, (role, p)
        assert all(not s.fences() for s in stores)
    # reopened as restarted workers would be, the DB workers hold every URL once
    for m in db:
        m.shard.close()
        m.open()
        m.shard.slots.delay_s = 0.0
    assert sum(m.shard.queue.queued + m.shard.queue.not_due for m in db) == before_queued
    got = []
    for m in db:
        assert m.shard.owned == a.owned(Role.DB, m.index)
        m.shard.slots.ready_at.clear()
        while (cut := m.shard.cut(100, None)[1]):
            got += [e.url for e in cut]
            m.shard.release_hosts({e.host for e in cut})
            m.shard.slots.ready_at.clear()
    assert sorted(got) == sorted(set(urls) - done)
    # the strategy's states are where their partitions' owners are
    assert _strategy_states(movers[Role.STRATEGY], a.owners[Role.STRATEGY]) == states_before
