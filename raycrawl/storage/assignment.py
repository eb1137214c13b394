"""Which worker owns each partition: the crawl's assignment, durable, with an epoch.

``STATE/assignment.json`` holds, for DB workers and strategy workers alike, the owner of
every partition and the number of workers, and an *epoch* that grows with every change.  It
is the one place ownership is read from: the coordinator writes it (when the crawl is created,
and at the commit point of a partition's move), and everyone who routes rows reads it —
``actors.peers.Peers`` for the DB workers' hand-over, the strategy workers' scoring log and
the coordinator's seeds.  A worker takes only rows of partitions it owns at its epoch and
refuses the others (:class:`NotOwner`); the sender reads the assignment again and sends them
to their owner, which is safe because applying a row twice changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from raycrawl.storage.statefiles import read_json, read_json_if_present, write_json

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
class Assignment:
    """The owner of each partition, per role, at ``epoch``."""

    epoch: int
    owners: dict[Role, tuple[int, ...]]
    workers: dict[Role, int]

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

    def moved(self, role: Role, partition: int, worker: int) -> Assignment:
        """The assignment once ``partition`` moved to ``worker`` (the next epoch)."""
        owners = dict(self.owners)
        table = list(owners[role])
        table[partition] = worker
        owners[role] = tuple(table)
        return Assignment(self.epoch + 1, owners, self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch,
                **{str(role): {"workers": self.workers[role], "owners": list(self.owners[role])}
                   for role in Role}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        return cls(int(data["epoch"]),
                   {role: tuple(int(w) for w in data[role]["owners"]) for role in Role},
                   {role: int(data[role]["workers"]) for role in Role})


def read_assignment(state_dir: str) -> Assignment:
    """The crawl's assignment; :class:`CrawlStateError` when it is missing or unreadable."""
    return Assignment.from_dict(read_json(state_dir, ASSIGNMENT))


def read_assignment_if_present(state_dir: str) -> Assignment | None:
    data = read_json_if_present(state_dir, ASSIGNMENT)
    return None if data is None else Assignment.from_dict(data)


def write_assignment(state_dir: str, assignment: Assignment) -> None:
    """Replace the assignment, atomically and durably (the commit point of a move)."""
    write_json(state_dir, ASSIGNMENT, assignment.to_dict())
