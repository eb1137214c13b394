"""What the coordinator decides, without Ray: lifecycle, page budget, status and the next step.

The coordinator actor (``actors/coordinator.py``) reads its workers, hands the reports to
:class:`CrawlControl` and carries out what it answers; every decision and every state file lives
here, so tests drive restarts, budgets and finishing with plain values.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from raycrawl.config import CrawlConfig
from raycrawl.errors import CrawlStateError
from raycrawl.formats.statefiles import COORDINATOR, MANIFEST, STATUS, read_json, write_json
from raycrawl.frontier.control import FinishDetector, Phase, Verdict, assign_partitions
from raycrawl.frontier.reports import CrawlStatus, DBWorkerReport, StrategyWorkerReport

RATE_WINDOW_S = 5.0  # pages/s is measured over this window
STATUS_WRITE_S = 1.0  # status.json is rewritten at most this often (and at every end)


def _read_or_none(state_dir: str, name: str) -> dict[str, Any] | None:
    """A state file, or None for a crawl that has none yet."""
    try:
        return read_json(state_dir, name)
    except CrawlStateError:
        return None


class Budget:
    """The ``max_pages`` budget, handed out to DB workers before each cut.

    Not idempotent: ``acquire`` and ``release`` change the count each time they are called.
    Ray repeats a call only after the coordinator died, and a restarted coordinator starts
    unknown (:attr:`known` is False) and recounts from the DB workers (URLs done or leased)
    before granting again; so the repeat is applied once, to the recount.  What is not exact
    across a coordinator restart: a grant whose reply was lost (its URLs, once leased, are in
    the recount and granted again: the crawl may end short), and an unused-grant release
    applied before the restart (the recount never saw it: up to one batch over).
    """

    def __init__(self, max_pages: int | None, known: bool = True) -> None:
        self.max_pages = max_pages
        self.granted = 0
        self.known = known or max_pages is None

    @property
    def left(self) -> int | None:
        return None if self.max_pages is None else self.max_pages - self.granted

    def recount(self, reports: list[DBWorkerReport]) -> None:
        """The budget used so far: URLs completed or leased, as the DB workers count them."""
        self.granted = sum(r.done_total + r.leased_urls for r in reports)
        self.known = True

    def acquire(self, want: int) -> int:
        """Grant up to ``want`` page fetches (call :meth:`recount` first when not known)."""
        if self.max_pages is None:
            return want
        grant = max(0, min(want, self.max_pages - self.granted))
        self.granted += grant
        return grant

    def release(self, unused: int) -> None:
        """Give back fetches granted and not made (a short cut, URLs queued for a retry)."""
        if self.max_pages is not None:
            self.granted -= unused


@dataclass(frozen=True, slots=True)
class Step:
    """What one reconcile pass does: start the loops of DB workers that are not running (a
    restarted worker), then move the depth gate or end the crawl."""

    restart: tuple[int, ...] = ()
    verdict: Verdict = Verdict.CONTINUE
    end: tuple[Phase, str] | None = None  # (phase, reason) to end with


@dataclass
class _Rate:
    samples: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, now: float, fetched: int) -> float:
        self.samples = [s for s in self.samples if now - s[0] <= RATE_WINDOW_S]
        self.samples.append((now, fetched))
        span = self.samples[-1][0] - self.samples[0][0]
        return (self.samples[-1][1] - self.samples[0][1]) / span if span > 0.5 else 0.0


class CrawlControl:
    """Lifecycle, budget, finish detection and status of one crawl generation.

    ``generation`` is Frontera's job id: 1 for a new crawl, one more for each resume.  If
    ``coordinator.json`` holds the same generation, the coordinator was restarted by Ray:
    :attr:`adopted` is True, the phase is the one saved, and the budget must be recounted.
    Otherwise the manifest is written for this generation.  Every phase change is saved
    before it is acted on, so a coordinator restarted mid-way carries the change on.
    """

    def __init__(self, config: CrawlConfig, generation: int = 1,
                 clock: Any = time.time) -> None:
        self.config = config
        self.generation = generation
        self.clock = clock
        self.reason = ""
        self.ending: Phase | None = None  # while STOPPING: the phase the crawl ends in
        self.started = clock()
        self.detector = FinishDetector(layered=config.max_depth is not None)
        self.rate = _Rate()
        self.last_status_write = 0.0
        os.makedirs(config.state_dir, exist_ok=True)
        saved = _read_or_none(config.state_dir, COORDINATOR)
        self.adopted = saved is not None and saved.get("generation") == generation
        if saved is not None and self.adopted:
            self.phase = Phase(saved["phase"])
            self.reason = saved.get("reason", "")
            self.ending = Phase(saved["ending"]) if saved.get("ending") else None
            self.started = saved.get("started", self.started)
        else:
            self.phase = Phase.STARTING
            manifest = _read_or_none(config.state_dir, MANIFEST) or {}
            write_json(config.state_dir, MANIFEST, {
                "crawl_id": config.crawl_id,
                "created_at": manifest.get("created_at", self.started),
                "generation": generation, "config": config.to_dict(),
                "strategy_workers": assign_partitions(config.partitions,
                                                      config.strategy_workers),
                "db_workers": assign_partitions(config.partitions, config.db_workers)})
            self._save()
        self.budget = Budget(config.max_pages, known=not self.adopted)

    def _save(self) -> None:
        write_json(self.config.state_dir, COORDINATOR, {
            "generation": self.generation, "phase": str(self.phase), "reason": self.reason,
            "ending": str(self.ending) if self.ending else None, "started": self.started})

    def set_phase(self, phase: Phase, reason: str | None = None) -> None:
        """Enter ``phase``; durable (``coordinator.json``) when this returns."""
        self.phase = phase
        if reason is not None:
            self.reason = reason
        self.ending = None
        self._save()

    def begin_end(self, phase: Phase, reason: str) -> None:
        """Enter STOPPING on the way to the terminal ``phase`` (saved, so a coordinator
        restarted while the workers drain ends the crawl the same way)."""
        self.phase, self.reason, self.ending = Phase.STOPPING, reason, phase
        self._save()

    def status(self, db: tuple[DBWorkerReport, ...], sw: tuple[StrategyWorkerReport, ...],
               force_write: bool = False) -> CrawlStatus:
        """The status from the workers' reports; written to ``status.json`` at most once a
        second (always with ``force_write``)."""
        now = self.clock()
        status = CrawlStatus.aggregate(
            db, sw, crawl_id=self.config.crawl_id, generation=self.generation,
            phase=self.phase, reason=self.reason, depth_gate=self.detector.gate,
            elapsed_s=round(now - self.started, 1), out=self.config.out,
            state=self.config.state_dir, updated_at=now)
        status = status.replace(pages_per_s=round(self.rate.observe(now, status.fetched), 1))
        if force_write or now - self.last_status_write >= STATUS_WRITE_S:
            self.last_status_write = now
            write_json(self.config.state_dir, STATUS, status.to_dict())
        return status

    def step(self, status: CrawlStatus, controls_pending: int) -> Step:
        """The next step from a fresh status (the budget must be known)."""
        if self.phase is Phase.STOPPING:  # restarted while draining: finish the end
            return Step(end=(self.ending or Phase.STOPPED, self.reason or "stopped"))
        if self.phase is not Phase.RUNNING:
            return Step()
        restart = tuple(i for i, r in enumerate(status.db_workers) if not r.running)
        finished = all(s.strategy_finished for s in status.strategy_workers)
        verdict = self.detector.observe(status.db_workers, controls_pending, self.budget.left,
                                        finished)
        end = (Phase.FINISHED, self.detector.reason) if verdict is Verdict.FINISH else None
        return Step(restart=restart, verdict=verdict, end=end)
