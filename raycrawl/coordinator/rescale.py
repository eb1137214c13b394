"""Rescaling a running crawl: where partitions should go, and the protocol of one move.

**The goal.**  ``raycrawl scale`` (``Crawl.scale``) asks for N DB workers and M strategy
workers.  :func:`plan_goal` gives each role its *goal*: the owner of every partition once the
rescale is done, balanced by the work each partition holds (its queued URLs, plus an even
share, so empty partitions spread by count too), moving as few partitions as it can.  The
goal is written in the assignment (``raycrawl.storage.assignment``) with the new workers'
count, so a coordinator restarted at any step carries on.  :func:`next_move` cuts the way
there into moves of a few partitions (an eighth of them at most, ``MOVE_SHARE``) from one
worker to another: the crawl keeps fetching every other partition while some move.  A crawl
that ends mid-rescale ends (a move under way holds its end until the move is done); the rest
of the rescale is carried on if it is resumed.

**One move** (:meth:`Rescaler.move`) of partitions ``ps`` from worker A to worker B:

1. the move is recorded in the assignment (nothing routes differently yet);
2. ``A.fence(ps)``: A cuts no more batches of them (durably: a restarted A stays fenced),
   and the move waits until none of their URLs is leased (their batches ended, their hosts'
   delays running);
3. ``A.export(ps)``: A *freezes* them (rows of them are refused from now on: their senders
   read the assignment again and retry) and copies their keys from one snapshot, with their
   hosts' politeness;
4. ``B.adopt(copies)``: B ingests the copies, inert (not owned: it cuts and takes nothing of
   them);
5. **the commit point**: the assignment names B the owner of ``ps`` (the next epoch);
6. ``B.sync()``: B reads the assignment and owns them (it would on its own at its next
   refusal or restart);
7. ``A.drop(ps)``: A deletes them; the move is cleared from the assignment.

Every step can be done again with the same result, and a move once recorded is always
carried forward (never undone), so a crash of any actor at any step ends the same way: a
restarted coordinator reads the move from the assignment and does it again from step 2 if the
commit point was not reached, from step 6 if it was.  Before the commit point A owns the
partitions with all their state (B's copy is inert and replaced on the next try); after it,
B does (A's keys are inert until dropped).  Rows are never lost in between: A queues them
until it freezes (they are in the copy), then refuses them until the sender finds B.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from raycrawl import faultpoints
from raycrawl.storage.assignment import Assignment, PartitionMove, Role, write_assignment
from raycrawl.storage.moves import PartitionCopy

MOVE_SHARE = 8  # a move takes at most 1/8 of the partitions (at least one)
LEASE_POLL_S = 0.05  # how often a move asks whether the fenced partitions' batches ended


def move_size(partitions: int) -> int:
    return max(1, partitions // MOVE_SHARE)


def plan_goal(owners: Sequence[int], workers: int, queued: Sequence[int]) -> tuple[int, ...]:
    """The owner of each partition among ``workers`` workers (0 .. workers-1), balanced by
    ``queued`` (URLs queued per partition) plus an even share per partition.  Each worker kept
    keeps its partitions, heaviest first, while they fit its share; the rest (and all of the
    workers that go) are dealt heaviest first to the least loaded worker."""
    parts = len(owners)
    base = max(1.0, sum(queued) / parts)
    weight = [q + base for q in queued]
    cap = sum(weight) / workers
    goal = [-1] * parts
    load = [0.0] * workers
    for p in sorted(range(parts), key=lambda p: (-weight[p], p)):
        w = owners[p]
        if w < workers and load[w] + weight[p] <= cap * 1.05:
            goal[p], load[w] = w, load[w] + weight[p]
    for p in sorted((p for p in range(parts) if goal[p] < 0), key=lambda p: (-weight[p], p)):
        w = min(range(workers), key=lambda w: (load[w], w))
        goal[p], load[w] = w, load[w] + weight[p]
    return tuple(goal)


def next_move(assignment: Assignment, role: Role) -> PartitionMove | None:
    """The next move toward ``role``'s goal: a few partitions between the pair of workers
    with the most of them to move (None: the goal is reached)."""
    goal = assignment.goal.get(role)
    if goal is None:
        return None
    owners = assignment.owners[role]
    pairs: dict[tuple[int, int], list[int]] = {}
    for p, (now, then) in enumerate(zip(owners, goal)):
        if now != then:
            pairs.setdefault((now, then), []).append(p)
    if not pairs:
        return None
    (source, target), parts = max(pairs.items(), key=lambda kv: (len(kv[1]), -kv[0][0]))
    return PartitionMove(role, source, target, tuple(parts[:move_size(len(owners))]))


class Mover(Protocol):
    """A worker as a move calls it (the actors' handles, or the stores themselves in tests)."""

    async def fence(self, partitions: list[int]) -> int: ...  # URLs still leased
    async def export(self, partitions: list[int]) -> list[PartitionCopy]: ...
    async def adopt(self, copies: list[PartitionCopy]) -> None: ...
    async def sync(self) -> None: ...
    async def drop(self, partitions: list[int]) -> None: ...


class MoveTimeout(Exception):
    """A fenced partition's batches did not end in time (the move stays recorded: it is tried
    again)."""


@dataclasses.dataclass
class Rescaler:
    """Carries out moves (see the module docstring); ``mover(role, worker)`` reaches a worker.
    ``lease_timeout_s`` bounds the wait for a fenced partition's batches."""

    state_dir: str
    mover: Callable[[Role, int], Mover]
    lease_timeout_s: float = 600.0
    moves_done: int = 0
    out: str | None = None  # the crawl's output, where the workers read the assignment

    def _point(self, point: str) -> None:
        faultpoints.reach(point, self.state_dir)

    def record(self, assignment: Assignment, move: PartitionMove) -> Assignment:
        """Step 1: the move is recorded (it will be carried forward whatever happens)."""
        assignment = dataclasses.replace(assignment, moving=move)
        write_assignment(self.state_dir, assignment, self.out)
        return assignment

    async def move(self, assignment: Assignment) -> Assignment:
        """Carry ``assignment.moving`` forward to its end; returns the assignment after it."""
        move = assignment.moving
        assert move is not None
        source, target = self.mover(move.role, move.source), self.mover(move.role, move.target)
        parts = list(move.partitions)
        owners = assignment.owners[move.role]
        if any(owners[p] != move.target for p in parts):  # not committed yet
            deadline = time.monotonic() + self.lease_timeout_s
            while await source.fence(parts):
                if time.monotonic() >= deadline:
                    raise MoveTimeout(f"{move}: batches of them still in flight after "
                                      f"{self.lease_timeout_s:g} s")
                await asyncio.sleep(LEASE_POLL_S)
            self._point("rescale.fenced")
            copies = await source.export(parts)
            self._point("rescale.exported")
            await target.adopt(copies)
            self._point("rescale.adopted")
            assignment = assignment.committed(move)
            write_assignment(self.state_dir, assignment, self.out)  # the commit point
            self._point("rescale.committed")
        await target.sync()
        await source.drop(parts)
        self._point("rescale.dropped")
        assignment = dataclasses.replace(assignment, moving=None)
        write_assignment(self.state_dir, assignment, self.out)
        self.moves_done += 1
        return assignment
