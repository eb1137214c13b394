"""The coordinator's logic without Ray: partition assignment, phases, finish detection.

Finish detection must not be fooled by work in transit between workers.  Every piece of work
is either queued in a DB worker or inside an in-flight spider-feed batch (a batch stays in
flight until the strategy workers have processed its spider log and the DB workers have queued
the links it produced).  A snapshot that reads the workers one after another can still miss a
batch that moved work from a worker not yet read to one already read; so the crawl is only
declared idle when two consecutive snapshots both show nothing in flight and every worker's
activity counter (enqueued + cut + completed) is unchanged between them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raycrawl.coordinator.reports import DBWorkerReport


class Phase(enum.StrEnum):
    """A crawl's lifecycle; a member is its word (``Phase.FINISHED == "finished"``)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.STOPPED, Phase.FINISHED, Phase.FAILED)

    @property
    def active(self) -> bool:
        """Running or paused: its workers are up and may be rescaled."""
        return self in (Phase.RUNNING, Phase.PAUSED)


class Verdict(enum.Enum):
    CONTINUE = "continue"
    ADVANCE_GATE = "advance-gate"
    FINISH = "finish"


class FinishDetector:
    """Decides, from successive reports, when to open the next depth layer and when to finish.

    ``gate`` is the deepest layer DB workers may fetch from (None: no depth layers).
    """

    def __init__(self, layered: bool) -> None:
        self.gate: int | None = 0 if layered else None
        self._previous: tuple[int, ...] | None = None
        self.reason = ""

    def observe(self, reports: Sequence[DBWorkerReport], controls_pending: int,
                budget_left: int | None, strategy_finished: bool) -> Verdict:
        quiet = controls_pending == 0 and all(r.in_flight == 0 for r in reports)
        signature = tuple(r.activity for r in reports)
        stable = quiet and signature == self._previous
        self._previous = signature if quiet else None
        if not stable:
            return Verdict.CONTINUE
        if strategy_finished:
            self.reason = "strategy finished"
        elif budget_left == 0:
            self.reason = "max pages reached"
        elif sum(r.queued + r.not_due for r in reports) == 0:
            self.reason = "no work left"
        elif self.gate is not None and all(r.queued_at_gate == 0 for r in reports):
            self.gate += 1
            self._previous = None
            return Verdict.ADVANCE_GATE
        else:
            return Verdict.CONTINUE
        return Verdict.FINISH
