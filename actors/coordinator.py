"""The coordinator actor: one per crawl, named ``<crawl>/coordinator``, never on the data path.

It creates the workers, routes seeds, hands out the page budget, runs the reconcile loop and
serves control calls; what it decides comes from ``raycrawl.frontier.coordination`` (phases,
budget, status, the next step), what it calls goes through the handles of ``actors.peers``.
The loop never dies: each part of a pass (read the workers, restart loops, act on the verdict)
runs in its own try/except.  If Ray restarts the coordinator, it adopts the workers (found by
name), recounts the budget from them and carries on; its phase survives in ``coordinator.json``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from raycrawl.config import CrawlConfig
from raycrawl.errors import InvalidURL
from raycrawl.formats import schemas
from raycrawl.frontier.control import Phase, Verdict
from raycrawl.frontier.coordination import CrawlControl
from raycrawl.frontier.reports import CrawlStatus, SeedReply
from raycrawl.frontier.routing import split_by_owner
from raycrawl.urls import url_info

from . import db_worker, strategy_worker
from .options import actor_options, db_worker_name, strategy_worker_name
from .peers import DBWorkerHandle, Peers, StrategyWorkerHandle

log = logging.getLogger(__name__)

_MAX_FAILED_PASSES = 100


class Coordinator:
    """Lifecycle and control of one crawl generation; see the module docstring."""

    def __init__(self, config: CrawlConfig, generation: int = 1) -> None:
        self.config = config
        self.control = CrawlControl(config, generation)
        self.controls_pending = 0
        self.last_status = CrawlStatus()
        self.failed_passes = 0
        self.closed = False
        self.peers = Peers(config)
        self.db_workers: list[DBWorkerHandle] = []
        self.strategy_workers: list[StrategyWorkerHandle] = []
        if self.control.adopted:  # restarted by Ray: adopt the running crawl's workers
            self.db_workers = self.peers.db_workers()
            self.strategy_workers = self.peers.strategy_workers()
        self.lock = asyncio.Lock()
        self.loop_task: asyncio.Task[None] | None = None

    @property
    def phase(self) -> Phase:
        return self.control.phase

    async def start(self, seeds: list[str]) -> SeedReply:
        """Create the workers (or find the ones of an earlier generation's state), queue the
        seeds, start fetching; returns the seed reply once the seeds are durably queued."""
        cfg = self.config
        if self.phase is not Phase.STARTING:  # a restarted coordinator: already running
            self._ensure_loop()
            return SeedReply()
        sw_cls, db_cls = strategy_worker.remote_class(), db_worker.remote_class()
        self.strategy_workers = [StrategyWorkerHandle(
            sw_cls.options(**actor_options(strategy_worker_name(cfg.crawl_id, i), worker=True))
            .remote(cfg, i)) for i in range(cfg.strategy_workers)]
        self.db_workers = [DBWorkerHandle(
            db_cls.options(**actor_options(db_worker_name(cfg.crawl_id, i), worker=True))
            .remote(cfg, i)) for i in range(cfg.db_workers)]
        await asyncio.gather(*(w.ready() for w in [*self.strategy_workers, *self.db_workers]))
        reply = await self.add_seeds(seeds)
        if self.control.generation > 1:  # resumed: pages already fetched count against max_pages
            await self._recount_budget()
        self.control.set_phase(Phase.RUNNING)
        await self._start_workers(range(len(self.db_workers)))
        self._ensure_loop()
        return reply

    def _ensure_loop(self) -> None:
        if (self.loop_task is None or self.loop_task.done()) and not self.closed:
            self.loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def heartbeat(self) -> None:
        """Workers call this every few seconds; a restarted coordinator resumes its loop."""
        self._ensure_loop()

    async def add_seeds(self, urls: list[str]) -> SeedReply:
        """Canonicalise and route seeds to their strategy workers; returns once they are
        queued, with the seeds refused and why."""
        self.controls_pending += 1
        try:
            infos, invalid = [], []
            for url in urls:
                try:
                    infos.append(url_info(url, self.config.partitions))
                except InvalidURL as exc:
                    invalid.append((url, str(exc)))
            feed = schemas.feed_batch(infos)
            parts = split_by_owner(feed, self.peers.sw_owner)
            await asyncio.gather(*(self.strategy_workers[w].add_seeds(part)
                                   for w, part in parts.items()))
            return SeedReply(accepted=feed.num_rows, invalid=tuple(invalid))
        finally:
            self.controls_pending -= 1

    async def _recount_budget(self) -> None:
        reports = await asyncio.gather(*(w.report() for w in self.db_workers))
        self.control.budget.recount(list(reports))

    async def acquire_budget(self, want: int) -> int:
        """Grant up to ``want`` page fetches of the ``max_pages`` budget (not idempotent:
        see ``Budget``)."""
        if not self.control.budget.known:
            await self._recount_budget()
        return self.control.budget.acquire(want)

    def release_budget(self, unused: int) -> None:
        self.control.budget.release(unused)

    async def _start_workers(self, indexes: Any) -> None:
        await asyncio.gather(*(self.db_workers[i].start(self.control.detector.gate)
                               for i in indexes))

    async def pause(self) -> Phase:
        """Cut no new batches; returns once the batches in flight are done and written."""
        async with self.lock:
            if self.phase is Phase.RUNNING:
                self.control.set_phase(Phase.PAUSED)
                await asyncio.gather(*(w.drain() for w in self.db_workers))
            return self.phase

    async def resume(self) -> Phase:
        async with self.lock:
            if self.phase is Phase.PAUSED:
                self.control.set_phase(Phase.RUNNING)
                await self._start_workers(range(len(self.db_workers)))
            return self.phase

    async def stop(self) -> Phase:
        """Drain batches in flight and write all output; the crawl ends as ``stopped`` and
        can be resumed from its state."""
        await self._end(Phase.STOPPED, "stopped by user")
        return self.phase

    async def _end(self, phase: Phase, reason: str) -> None:
        """Drain the DB workers, then enter ``phase``.  STOPPING is saved first, so a
        coordinator restarted while draining ends the crawl the same way."""
        async with self.lock:
            if self.phase.terminal:
                return
            self.control.begin_end(phase, reason)
            await asyncio.gather(*(w.drain() for w in self.db_workers))
            self.control.set_phase(phase, reason)
        await self._refresh_status(force_write=True)

    async def _loop(self) -> None:
        while not self.phase.terminal:
            started = time.monotonic()
            if await self.step():
                self.failed_passes = 0
            else:  # a pass that keeps failing ends the crawl
                self.failed_passes += 1
                if self.failed_passes >= _MAX_FAILED_PASSES:
                    self.control.set_phase(Phase.FAILED, "reconcile kept failing")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.poll_interval_s - elapsed))
        # Ended, and no driver may ever come back (it was killed): give one ``linger_s`` to
        # collect the result, then free the workers and this actor.  The state stays on disk.
        await asyncio.sleep(self.config.linger_s)
        if not self.closed:
            log.warning("no driver collected crawl %s; shutting down", self.config.crawl_id)
            await self.shutdown()
            ray.actor.exit_actor()

    async def step(self) -> bool:
        """One reconcile pass: read the workers, restart a DB worker's loop that a restart
        stopped, open a depth layer or finish.  Returns whether every part succeeded."""
        try:
            status = await self._refresh_status()
            if not self.control.budget.known:
                await self._recount_budget()
        except Exception:
            log.exception("reading the workers failed (%d passes in a row)",
                          self.failed_passes + 1)
            return False
        step = self.control.step(status, self.controls_pending)
        ok = True
        if step.restart:
            try:
                await self._start_workers(step.restart)
            except Exception:
                log.exception("restarting the loops of DB workers %s failed", step.restart)
                ok = False
        try:
            if step.verdict is Verdict.ADVANCE_GATE:
                await asyncio.gather(*(w.set_gate(self.control.detector.gate)
                                       for w in self.db_workers))
            if step.end is not None:
                await self._end(*step.end)
        except Exception:
            log.exception("acting on %s failed", step)
            ok = False
        return ok

    async def _refresh_status(self, force_write: bool = False) -> CrawlStatus:
        db = await asyncio.gather(*(w.report() for w in self.db_workers))
        sw = await asyncio.gather(*(w.report() for w in self.strategy_workers))
        self.last_status = self.control.status(tuple(db), tuple(sw), force_write)
        return self.last_status

    async def status(self) -> CrawlStatus:
        """A fresh status snapshot (the last one taken, once the workers are shut down)."""
        self._ensure_loop()
        if not self.closed:
            await self._refresh_status()
        return self.last_status.replace(phase=self.phase, reason=self.control.reason)

    async def shutdown(self) -> None:
        """Stop everything, close the stores and end the workers (the state stays on disk)."""
        if not self.phase.terminal:
            await self._end(Phase.STOPPED, "shut down")
        self.closed = True
        workers = [*self.db_workers, *self.strategy_workers]
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        for w in workers:
            w.kill()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(Coordinator)
