"""What the coordinator decides, without Ray: lifecycle, status and the next step (with the page
budget's moves, see ``raycrawl.coordinator.budget``).

The coordinator actor (``actors/coordinator.py``) reads its workers, hands the reports to
:class:`CrawlControl` and carries out what it answers; every decision and every state file lives
here, so tests drive restarts, budgets and finishing with plain values.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.budget import BudgetPlanner, Move, Share
from raycrawl.coordinator.phases import FinishDetector, Phase, Verdict
from raycrawl.coordinator.reports import (
    CrawlStatus,
    DBWorkerReport,
    SeedReply,
    StrategyWorkerReport,
)
from raycrawl.db_worker.politeness import Wait
from raycrawl.errors import CrawlStateError, InvalidURL, StorageError
from raycrawl.formats import schemas
from raycrawl.storage.assignment import (
    Assignment,
    read_assignment_if_present,
    write_assignment,
)
from raycrawl.storage.ownership import RENEW_S, release_lease, renew_lease, take_lease
from raycrawl.storage.statefiles import (
    COORDINATOR,
    MANIFEST,
    OUT_COPIED,
    STATUS,
    out_copy,
    put_json,
    read_json,
    write_json,
)
from raycrawl.urls import url_info

log = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0  # pages/s is measured over this window
# Queued URLs, nothing in flight and no URL waiting for a time of its own, this long: a stall
# (a bug to fix: the reasons say what holds the URLs), logged and counted.
STALL_S = 10.0
# The reasons of DBShard.reasons that end at a time of their own (a host's delay, backoff, ...)
TIMED_REASONS = frozenset({*(w.value for w in Wait), "host-busy", "retry-backoff",
                           "max-rate"})
STATUS_WRITE_S = 1.0  # status.json is rewritten at most this often (and at every end)
# The last reports of DB workers a rescale retired (index -> report): their pages done and
# their share of the page budget still count (see CrawlControl.retire).
RETIRED = "retired.json"


def seed_feed(urls: list[str], partitions: int) -> tuple[pa.RecordBatch, SeedReply]:
    """The spider feed of the valid seeds, and the reply: how many, and each invalid one
    with why."""
    infos, invalid = [], []
    for url in urls:
        try:
            infos.append(url_info(url, partitions))
        except InvalidURL as exc:
            invalid.append((url, str(exc)))
    feed = schemas.feed_batch(infos)
    return feed, SeedReply(accepted=feed.num_rows, invalid=tuple(invalid))


def _read_or_none(state_dir: str, name: str) -> dict[str, Any] | None:
    """A state file, or None for a crawl that has none yet."""
    try:
        return read_json(state_dir, name)
    except CrawlStateError:
        return None


@dataclass(frozen=True, slots=True)
class Step:
    """What one reconcile pass does: start the loops of DB workers that are not running (a
    restarted worker), then move the depth gate or end the crawl."""

    restart: tuple[int, ...] = ()
    verdict: Verdict = Verdict.CONTINUE
    end: tuple[Phase, str] | None = None  # (phase, reason) to end with
    budget: tuple[Move, ...] = ()  # allowance moves between DB workers (with max_pages)
    stall: str = ""  # a stall that began: what is queued and why (to log)


@dataclass
class _Rate:
    samples: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, now: float, fetched: int) -> float:
        self.samples = [s for s in self.samples if now - s[0] <= RATE_WINDOW_S]
        self.samples.append((now, fetched))
        span = self.samples[-1][0] - self.samples[0][0]
        # (never below 0: a restarted worker's counters that are not durable start again)
        return max(0.0, (self.samples[-1][1] - self.samples[0][1]) / span) if span > 0.5 else 0.0


class CrawlControl:
    """Lifecycle, budget, finish detection and status of one crawl generation.

    ``generation`` is Frontera's job id: 1 for a new crawl, one more for each resume.  If
    ``coordinator.json`` holds the same generation, the coordinator was restarted by Ray:
    :attr:`adopted` is True and the phase is the one saved.
    Otherwise the manifest is written for this generation.  Every phase change is saved
    before it is acted on, so a coordinator restarted mid-way carries the change on.
    """

    def __init__(self, config: CrawlConfig, generation: int = 1,
                 clock: Any = time.time, cluster: str = "") -> None:
        self.config = config
        self.generation = generation
        self.clock = clock
        self.reason = ""
        self.ending: Phase | None = None  # while STOPPING: the phase the crawl ends in
        self.started = clock()
        self.detector = FinishDetector(layered=config.max_depth is not None)
        self.rate = _Rate()
        self.revisit_rate = _Rate()
        self.last_status_write = 0.0
        self.cluster = cluster
        self.lease_renewed = 0.0
        self.save_error = ""
        self.stalls = 0
        self.stalled_since: float | None = None  # when the current stall began
        self.stall_counted = False
        os.makedirs(config.state_dir, exist_ok=True)
        self.out_copy = out_copy(config.out, config.state_dir)
        self.copy_failed = False  # the last copy to OUT failed (logged once until one works)
        take_lease(config.state_dir, config.crawl_id, generation, cluster, clock)
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
            manifest = {"crawl_id": config.crawl_id,
                        "created_at": manifest.get("created_at", self.started),
                        "generation": generation, "config": config.to_dict()}
            write_json(config.state_dir, MANIFEST, manifest)
            if self.out_copy is not None:
                put_json(self.out_copy, MANIFEST, manifest)
            if read_assignment_if_present(config.state_dir) is None:  # a new crawl
                write_assignment(config.state_dir, Assignment.initial(
                    config.partitions, config.db_workers, config.strategy_workers))
            self._save()
        self.budget = (None if config.max_pages is None else
                       BudgetPlanner(config.max_pages, step=2 * config.batch_size))
        self.retired = {int(i): DBWorkerReport.from_dict(r) for i, r in
                        (_read_or_none(config.state_dir, RETIRED) or {}).items()}
        # DB workers a rescale is retiring: drained (paused), never started again by a pass
        # (a retiring worker started again lent its fetch workers, and its kill cut its
        # guests' requests off: they were sent twice)
        self.retiring: set[int] = set()

    def retire(self, index: int, report: DBWorkerReport) -> None:
        """Keep the last report of DB worker ``index``, retired by a rescale (durable on
        return): the crawl's totals and page budget go on counting what it did.  Its store
        stays: a later rescale that brings worker ``index`` back goes on from it (and its
        report here is no longer counted)."""
        self.retired[index] = report
        write_json(self.config.state_dir, RETIRED,
                   {str(i): r.to_dict() for i, r in self.retired.items()})

    def _retired(self, workers: int) -> tuple[DBWorkerReport, ...]:
        """The retired workers' last reports, those of workers not running again."""
        return tuple(r for i, r in sorted(self.retired.items()) if i >= workers)

    def _save(self) -> None:
        self._write(COORDINATOR, {
            "generation": self.generation, "phase": str(self.phase), "reason": self.reason,
            "ending": str(self.ending) if self.ending else None, "started": self.started})

    def _write(self, name: str, data: dict[str, Any]) -> None:
        """Write a state file (and its copy in OUT); one that cannot be written (a full disk)
        keeps the change in memory and ends a running crawl (:attr:`save_error`, see
        :meth:`step`)."""
        try:
            write_json(self.config.state_dir, name, data)
        except StorageError as exc:
            self.save_error = self.save_error or str(exc)
            return
        if self.out_copy is not None and name in OUT_COPIED:
            try:  # a copy for readers elsewhere: the next write tries again
                put_json(self.out_copy, name, data)
                self.copy_failed = False
            except StorageError as exc:
                if not self.copy_failed:
                    log.warning("the copy of %s in OUT was not written (written again with "
                                "the next change): %s", name, exc)
                self.copy_failed = True

    def set_phase(self, phase: Phase, reason: str | None = None) -> None:
        """Enter ``phase``; durable (``coordinator.json``) when this returns, unless the state
        folder cannot be written (then the change stays in memory, see ``_write``).

        Entering RUNNING from STARTING restarts the clock that ``run_for_s`` and the
        status's ``elapsed_s`` read: a crawl runs for its time once its workers are up and
        its seeds queued (a start that took 7 s of an 8 s run on a loaded machine left a
        resumed crawl one second to fetch in)."""
        if phase is Phase.RUNNING and self.phase is Phase.STARTING:
            self.started = self.clock()
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

    def renew_lease(self) -> None:
        """Keep the state folder's lease (every ``RENEW_S``; released once the crawl ended)."""
        now = self.clock()
        try:
            if self.phase.terminal:
                if self.lease_renewed >= 0:
                    release_lease(self.config.state_dir, self.config.crawl_id,
                                  self.generation, self.cluster)
                    self.lease_renewed = -1.0
            elif now - self.lease_renewed >= RENEW_S:
                renew_lease(self.config.state_dir, self.config.crawl_id, self.generation,
                            self.cluster, now)
                self.lease_renewed = now
        except StorageError as exc:
            self.save_error = self.save_error or str(exc)

    def status(self, db: tuple[DBWorkerReport, ...], sw: tuple[StrategyWorkerReport, ...],
               force_write: bool = False, fetch_workers: int = 0,
               waiting: str = "", fields: dict[str, Any] | None = None) -> CrawlStatus:
        """The status from the workers' reports (and the crawl's CPU share, and ``fields``:
        the rescale under way, ``CrawlStatus.moving`` and the next, and the last checkpoint);
        written to ``status.json`` at most once a second (always with ``force_write``)."""
        self.renew_lease()
        now = self.clock()
        status = CrawlStatus.aggregate(
            db + self._retired(len(db)), sw, crawl_id=self.config.crawl_id,
            generation=self.generation,
            phase=self.phase, reason=self.reason, depth_gate=self.detector.gate,
            elapsed_s=round(now - self.started, 1), out=self.config.out,
            state=self.config.state_dir, updated_at=now, fetch_workers=fetch_workers,
            waiting=waiting, stalls=self.stalls, **(fields or {}))
        status = status.replace(
            db_workers=db,
            pages_per_s=round(self.rate.observe(now, status.fetched), 1),
            revisits_per_s=round(self.revisit_rate.observe(now, status.revisits), 1))
        if force_write or now - self.last_status_write >= STATUS_WRITE_S:
            self.last_status_write = now
            self._write(STATUS, status.to_dict())
        return status

    def step(self, status: CrawlStatus, controls_pending: int) -> Step:
        """The next step from a fresh status."""
        if self.phase is Phase.STOPPING:  # restarted while draining: finish the end
            return Step(end=(self.ending or Phase.STOPPED, self.reason or "stopped"))
        if self.phase is not Phase.RUNNING:
            return Step()
        broken = [r.storage_error for r in status.db_workers if r.storage_error] + [
            r.storage_error for r in status.strategy_workers if r.storage_error] + [
            e for e in (self.save_error,) if e]
        if broken:  # resumable once the cause is gone: nothing was lost
            return Step(end=(Phase.FAILED, f"storage error: {broken[0]}"))
        restart = tuple(i for i, r in enumerate(status.db_workers)
                        if not r.running and i not in self.retiring)
        finished = all(s.strategy_finished for s in status.strategy_workers)
        shares = [Share(r.allowance, r.held, r.queued_at_gate, r.in_flight)
                  for r in status.db_workers + self._retired(len(status.db_workers))]
        left = None if self.budget is None else self.budget.left(shares)
        verdict = self.detector.observe(status.db_workers, controls_pending, left, finished)
        end = (Phase.FINISHED, self.detector.reason) if verdict is Verdict.FINISH else None
        run_for = self.config.run_for_s
        if end is None and run_for is not None and self.clock() - self.started >= run_for:
            end = (Phase.FINISHED, f"ran for {run_for:g} s")
        moves = () if self.budget is None or end else tuple(self.budget.plan(shares))
        stall = self._watch_stall(status) if end is None else ""
        return Step(restart=restart, verdict=verdict, end=end, budget=moves, stall=stall)

    def _watch_stall(self, status: CrawlStatus) -> str:
        """A stall that lasted ``STALL_S`` (counted once): URLs queued, no batch in flight,
        none waiting for a time of its own, the crawl not waiting for CPUs.  Returns what
        to log, once a stall is found."""
        reasons = status.queued_by_reason
        stalled = (status.queued > 0 and status.in_flight_batches == 0 and not status.waiting
                   and not TIMED_REASONS.intersection(reasons)
                   and "paused" not in reasons)
        if not stalled:
            self.stalled_since, self.stall_counted = None, False
            return ""
        now = self.clock()
        if self.stalled_since is None:
            self.stalled_since = now
        elif not self.stall_counted and now - self.stalled_since >= STALL_S:
            self.stall_counted = True
            self.stalls += 1
            why = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items()))
            return (f"stalled for {STALL_S:g} s: {status.queued} URLs queued ({why}), "
                    f"nothing in flight")
        return ""
