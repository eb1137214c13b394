"""Which worker owns each partition: the crawl's assignment, durable, with an epoch.

``STATE/assignment.json`` holds, for DB workers and strategy workers alike, the owner of
every partition and the number of workers, and an *epoch* that grows with every change of
owner; the workers read its copy in ``OUT/_crawl/assignment.json`` (their ``--state`` is
their node's).  While a crawl is rescaled it also holds the *goal* (the owners once every move is
done, see ``raycrawl.coordinator.rescale``) and the move in progress, so a coordinator
restarted at any step carries the rescale on.  It is the one place ownership is read from: the
coordinator writes it (when the crawl is created, and at every step of a rescale; a move's
commit point is the write that names the new owner), and everyone who routes rows reads it —
``actors.peers.Peers`` for the DB workers' hand-over, the strategy workers' scoring log and
the coordinator's seeds.  A worker takes only rows of partitions it owns at its epoch and
refuses the others (:class:`NotOwner`); the sender reads the assignment again and sends them
to their owner, which is safe because applying a row twice changes nothing.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from raycrawl.errors import CrawlStateError
from raycrawl.storage.location import Location
from raycrawl.storage.statefiles import (
    OUT_COPY,
    put_json,
    read_json,
    read_json_if_present,
    write_json,
)

ASSIGNMENT = "assignment.json"


class Role(enum.StrEnum):
    """The workers that own partitions."""

    DB = "db_workers"
    STRATEGY = "strategy_workers"


class NotOwner(Exception):
    """Rows of partitions a worker does not own (at its epoch) were sent to it."""

    def __init__(self, who: str, partitions: list[int], epoch: int) -> None:
        super().__init__(f"{who} does not own partitions {partitions[:8]} at epoch {epoch}")
        self.who, self.partitions, self.epoch = who, partitions, epoch

    def __reduce__(self) -> Any:  # (Ray carries it between processes by pickle)
        return NotOwner, (self.who, self.partitions, self.epoch)


def round_robin(partitions: int, workers: int) -> tuple[int, ...]:
    """partition -> worker: ``p % workers``."""
    return tuple(p % workers for p in range(partitions))


@dataclass(frozen=True, slots=True)
class PartitionMove:
    """``partitions`` of ``role`` moving from worker ``source`` to worker ``target``."""

    role: Role
    source: int
    target: int
    partitions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"role": str(self.role), "source": self.source, "target": self.target,
                "partitions": list(self.partitions)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionMove:
        return cls(Role(data["role"]), int(data["source"]), int(data["target"]),
                   tuple(int(p) for p in data["partitions"]))

    def __str__(self) -> str:
        kind = "DB" if self.role is Role.DB else "strategy"
        return (f"{kind} partitions {ranges(self.partitions)}: worker {self.source} -> "
                f"{self.target}")


@dataclass(frozen=True, slots=True)
class Assignment:
    """The owner of each partition, per role, at ``epoch``; while rescaling, the ``goal``
    owners per role and the move in progress (``moving``)."""

    epoch: int
    owners: dict[Role, tuple[int, ...]]
    workers: dict[Role, int]
    goal: dict[Role, tuple[int, ...]] = field(default_factory=dict)
    moving: PartitionMove | None = None

    @classmethod
    def initial(cls, partitions: int, db_workers: int, strategy_workers: int) -> Assignment:
        return cls(1, {Role.DB: round_robin(partitions, db_workers),
                       Role.STRATEGY: round_robin(partitions, strategy_workers)},
                   {Role.DB: db_workers, Role.STRATEGY: strategy_workers})

    @property
    def partitions(self) -> int:
        return len(self.owners[Role.DB])

    def owned(self, role: Role, worker: int) -> frozenset[int]:
        """The partitions ``worker`` owns."""
        return frozenset(p for p, w in enumerate(self.owners[role]) if w == worker)

    def by_worker(self, role: Role) -> list[list[int]]:
        """Each worker's partitions, in order."""
        parts: list[list[int]] = [[] for _ in range(self.workers[role])]
        for p, w in enumerate(self.owners[role]):
            parts[w].append(p)
        return parts

    def committed(self, move: PartitionMove) -> Assignment:
        """The assignment once ``move`` is committed (the next epoch): its partitions are
        the target's."""
        owners = dict(self.owners)
        table = list(owners[move.role])
        for p in move.partitions:
            table[p] = move.target
        owners[move.role] = tuple(table)
        return replace(self, epoch=self.epoch + 1, owners=owners)

    def with_workers(self, role: Role, workers: int) -> Assignment:
        return replace(self, workers={**self.workers, role: workers})

    def wanted(self, role: Role) -> int:
        """The workers of ``role`` the rescale under way asks for (as many as now: none)."""
        return max(self.goal[role]) + 1 if role in self.goal else self.workers[role]

    @property
    def rescale_to(self) -> dict[str, int]:
        """The workers asked for, by role, of the roles being rescaled."""
        return {str(role): self.wanted(role) for role in self.goal}

    @property
    def to_move(self) -> int:
        """Partitions still to move toward the goal."""
        return sum(1 for role, goal in self.goal.items()
                   for now, then in zip(self.owners[role], goal) if now != then)

    @property
    def rescaling(self) -> bool:
        """A rescale is under way (its goal not reached, or its last step not done)."""
        return bool(self.goal) or self.moving is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch}
        for role in Role:
            out[str(role)] = {"workers": self.workers[role], "owners": list(self.owners[role])}
            if role in self.goal:
                out[str(role)]["goal"] = list(self.goal[role])
        out["moving"] = None if self.moving is None else self.moving.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        moving = data.get("moving")
        return cls(int(data["epoch"]),
                   {role: tuple(int(w) for w in data[role]["owners"]) for role in Role},
                   {role: int(data[role]["workers"]) for role in Role},
                   {role: tuple(int(w) for w in data[role]["goal"]) for role in Role
                    if data[role].get("goal") is not None},
                   None if moving is None else PartitionMove.from_dict(moving))


def ranges(partitions: Iterable[int]) -> str:
    """``0-3,7``: sorted partitions as ranges."""
    runs: list[list[int]] = []
    for p in sorted(partitions):
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def read_assignment(state_dir: str) -> Assignment:
    """The crawl's assignment; :class:`CrawlStateError` when it is missing or unreadable."""
    return Assignment.from_dict(read_json(state_dir, ASSIGNMENT))


def read_assignment_if_present(state_dir: str) -> Assignment | None:
    data = read_json_if_present(state_dir, ASSIGNMENT)
    return None if data is None else Assignment.from_dict(data)


def write_assignment(state_dir: str, assignment: Assignment, out: str | None = None) -> None:
    """Replace the assignment, atomically and durably (the commit point of a move), and its
    copy in ``OUT/_crawl`` (``out``: the crawl's output), which the workers read."""
    write_json(state_dir, ASSIGNMENT, assignment.to_dict())
    if out is not None:
        put_json(Location.of(out).child(OUT_COPY), ASSIGNMENT, assignment.to_dict())


def read_assignment_copy(out: str) -> Assignment:
    """The assignment as the workers read it, from ``OUT/_crawl`` (their ``--state`` is
    node-local: the coordinator's is not theirs); :class:`CrawlStateError` when missing."""
    raw = Location.of(out).child(OUT_COPY).read(ASSIGNMENT)
    if raw is None:
        raise CrawlStateError(f"no assignment in {out}/{OUT_COPY} (was the crawl created by "
                              f"an older raycrawl? resume it with this one)")
    return Assignment.from_dict(json.loads(raw))
