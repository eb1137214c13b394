"""The coordinator actor: one per crawl, named ``<crawl>/coordinator``, never on the data path.

It writes the crawl manifest, creates the workers, routes seeds, hands out the page budget,
runs the reconcile loop (finish detection, depth gate, restarting worker loops, status file)
and serves control calls.  The loop never dies: each pass runs in its own try/except and is
timed.  If Ray restarts the coordinator, it adopts the workers (found by name), recounts the
budget from them and carries on; its phase survives in ``coordinator.json``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray

from raycrawl.config import CrawlConfig
from raycrawl.errors import CrawlStateError, InvalidURL
from raycrawl.formats import schemas
from raycrawl.formats.statefiles import COORDINATOR, MANIFEST, STATUS, read_json, write_json
from raycrawl.frontier.control import DBReport, FinishDetector, Phase, Verdict, assign_partitions
from raycrawl.frontier.routing import split_by_owner
from raycrawl.urls import url_info

from . import db_worker, strategy_worker
from .options import actor_options, db_worker_name, strategy_worker_name
from .peers import Peers

log = logging.getLogger(__name__)

_MAX_FAILED_PASSES = 100


def _read_or_none(state_dir: str, name: str) -> dict[str, Any] | None:
    """A state file, or None for a crawl that has none yet."""
    try:
        return read_json(state_dir, name)
    except CrawlStateError:
        return None


class Coordinator:
    """Lifecycle and control of one crawl generation; see the module docstring.

    ``generation`` is Frontera's job id: 1 for a new crawl, one more for each resume.
    """

    def __init__(self, config: CrawlConfig, generation: int = 1) -> None:
        self.config = config
        self.generation = generation
        self.reason = ""
        self.detector = FinishDetector(layered=config.max_depth is not None)
        self.granted = 0
        self.budget_known = True
        self.controls_pending = 0
        self.started = time.time()
        self.samples: list[tuple[float, int]] = []
        self.last_status: dict[str, Any] = {}
        self.last_status_write = 0.0
        self.failed_passes = 0
        self.closed = False
        self.peers = Peers(config)
        self.db_workers: list[Any] = []
        self.strategy_workers: list[Any] = []
        self.lock = asyncio.Lock()
        self.loop_task: asyncio.Task[None] | None = None
        os.makedirs(config.state_dir, exist_ok=True)
        saved = _read_or_none(config.state_dir, COORDINATOR)
        if saved is not None and saved.get("generation") == generation:
            # Restarted by Ray: adopt the running crawl.
            self.phase = Phase(saved["phase"])
            self.reason = saved.get("reason", "")
            self.started = saved.get("started", self.started)
            self.budget_known = False
            self.db_workers = [self.peers.db_worker(i) for i in range(config.db_workers)]
            self.strategy_workers = [self.peers.strategy_worker(i)
                                     for i in range(config.strategy_workers)]
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

    def _save(self) -> None:
        write_json(self.config.state_dir, COORDINATOR, {
            "generation": self.generation, "phase": str(self.phase), "reason": self.reason,
            "started": self.started})

    def _set_phase(self, phase: Phase, reason: str | None = None) -> None:
        self.phase = phase
        if reason is not None:
            self.reason = reason
        self._save()

    async def start(self, seeds: list[str]) -> dict[str, Any]:
        """Create the workers (or find the ones of an earlier generation's state), queue the
        seeds, start fetching; returns the seed report once the seeds are durably queued."""
        cfg = self.config
        if self.phase is not Phase.STARTING:  # a restarted coordinator: already running
            self._ensure_loop()
            return {"accepted": 0, "invalid": []}
        sw_cls = strategy_worker.remote_class()
        db_cls = db_worker.remote_class()
        self.strategy_workers = [
            sw_cls.options(**actor_options(strategy_worker_name(cfg.crawl_id, i), worker=True))
            .remote(cfg, i) for i in range(cfg.strategy_workers)]
        self.db_workers = [
            db_cls.options(**actor_options(db_worker_name(cfg.crawl_id, i), worker=True))
            .remote(cfg, i) for i in range(cfg.db_workers)]
        await asyncio.gather(*(w.__ray_ready__.remote()
                               for w in self.strategy_workers + self.db_workers))
        report = await self.add_seeds(seeds)
        if self.generation > 1:  # resumed: pages already fetched count against max_pages
            await self._recount_budget()
        self._set_phase(Phase.RUNNING)
        await asyncio.gather(*(db.start.remote(self.detector.gate) for db in self.db_workers))
        self._ensure_loop()
        return report

    def _ensure_loop(self) -> None:
        if (self.loop_task is None or self.loop_task.done()) and not self.closed:
            self.loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def heartbeat(self) -> None:
        """Workers call this every few seconds; a restarted coordinator resumes its loop."""
        self._ensure_loop()

    async def add_seeds(self, urls: list[str]) -> dict[str, Any]:
        """Canonicalise and route seeds to their strategy workers; returns
        ``{"accepted": n, "invalid": [(url, reason), ...]}`` once they are queued."""
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
            await asyncio.gather(*(self.strategy_workers[w].add_seeds.remote(part)
                                   for w, part in parts.items()))
            return {"accepted": feed.num_rows, "invalid": invalid}
        finally:
            self.controls_pending -= 1

    async def _recount_budget(self) -> None:
        """The budget used so far: URLs completed or leased, as the DB workers count them."""
        reports = await asyncio.gather(*(w.report.remote() for w in self.db_workers))
        self.granted = sum(r["done_total"] + r["leased_urls"] for r in reports)
        self.budget_known = True

    async def acquire_budget(self, want: int) -> int:
        """Grant up to ``want`` page fetches of the ``max_pages`` budget."""
        if self.config.max_pages is None:
            return want
        if not self.budget_known:
            await self._recount_budget()
        grant = max(0, min(want, self.config.max_pages - self.granted))
        self.granted += grant
        return grant

    def release_budget(self, unused: int) -> None:
        self.granted -= unused

    async def pause(self) -> str:
        """Cut no new batches; returns once the batches in flight are done and written."""
        async with self.lock:
            if self.phase is Phase.RUNNING:
                self._set_phase(Phase.PAUSED)
                await asyncio.gather(*(db.drain.remote() for db in self.db_workers))
            return str(self.phase)

    async def resume(self) -> str:
        async with self.lock:
            if self.phase is Phase.PAUSED:
                self._set_phase(Phase.RUNNING)
                await asyncio.gather(*(db.start.remote(self.detector.gate)
                                       for db in self.db_workers))
            return str(self.phase)

    async def stop(self) -> str:
        """Drain batches in flight and write all output; the crawl ends as ``stopped`` and
        can be resumed from its state."""
        await self._end(Phase.STOPPED, "stopped by user")
        return str(self.phase)

    async def _end(self, phase: Phase, reason: str) -> None:
        async with self.lock:
            if self.phase.terminal:
                return
            self.phase = Phase.STOPPING
            await asyncio.gather(*(db.drain.remote() for db in self.db_workers))
            self._set_phase(phase, reason)
        await self._refresh_status(force=True)

    async def _loop(self) -> None:
        while not self.phase.terminal:
            started = time.monotonic()
            try:
                await self.step()
                self.failed_passes = 0
            except Exception:  # the loop never dies; a pass that keeps failing ends the crawl
                self.failed_passes += 1
                log.exception("reconcile pass failed (%d in a row)", self.failed_passes)
                if self.failed_passes >= _MAX_FAILED_PASSES:
                    self._set_phase(Phase.FAILED, "reconcile kept failing")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.poll_interval_s - elapsed))
        # Ended, and no driver may ever come back (it was killed): give one ``linger_s`` to
        # collect the result, then free the workers and this actor.  The state stays on disk.
        await asyncio.sleep(self.config.linger_s)
        if not self.closed:
            log.warning("no driver collected crawl %s; shutting down", self.config.crawl_id)
            await self.shutdown()
            ray.actor.exit_actor()

    async def step(self) -> None:
        """One reconcile pass: read the workers, restart a DB worker's loop that a restart
        stopped, open a depth layer or finish."""
        status = await self._refresh_status()
        if self.phase is Phase.STOPPING:  # a coordinator restarted while draining
            await self._end(Phase.STOPPED, self.reason or "stopped")
            return
        if self.phase is not Phase.RUNNING:
            return
        for worker, report in zip(self.db_workers, status["db_workers"]):
            if not report["running"]:
                await worker.start.remote(self.detector.gate)
        reports = [DBReport(r["queued"], r["queued_at_gate"], r["in_flight"], r["activity"])
                   for r in status["db_workers"]]
        if not self.budget_known:
            await self._recount_budget()
        budget_left = (None if self.config.max_pages is None
                       else self.config.max_pages - self.granted)
        finished = all(s["strategy_finished"] for s in status["strategy_workers"])
        verdict = self.detector.observe(reports, self.controls_pending, budget_left, finished)
        if verdict is Verdict.ADVANCE_GATE:
            await asyncio.gather(*(db.set_gate.remote(self.detector.gate)
                                   for db in self.db_workers))
        elif verdict is Verdict.FINISH:
            await self._end(Phase.FINISHED, self.detector.reason)

    async def _refresh_status(self, force: bool = False) -> dict[str, Any]:
        db = await asyncio.gather(*(w.report.remote() for w in self.db_workers))
        sw = await asyncio.gather(*(w.stats.remote() for w in self.strategy_workers))
        now = time.time()
        fetched = sum(r["done_total"] for r in db)  # durable: survives worker restarts
        self.samples = [s for s in self.samples if now - s[0] <= 5.0] + [(now, fetched)]
        span = self.samples[-1][0] - self.samples[0][0]
        rate = (self.samples[-1][1] - self.samples[0][1]) / span if span > 0.5 else 0.0
        error_kinds: dict[str, int] = {}
        for r in db:
            for key, n in r.items():
                if key.startswith("err:"):
                    error_kinds[key[4:]] = error_kinds.get(key[4:], 0) + n
        self.last_status = {
            "crawl_id": self.config.crawl_id, "generation": self.generation,
            "phase": str(self.phase), "reason": self.reason,
            "fetched": fetched, "queued": sum(r["queued"] for r in db),
            "in_flight_batches": sum(r["in_flight"] for r in db),
            "errors": sum(r["errors"] for r in db), "error_kinds": error_kinds,
            "retries": sum(r["retries"] for r in db),
            "parked_hosts": sum(r["parked_hosts"] for r in db),
            "rows_written": sum(r["rows_written"] for r in db),
            "pages_per_s": round(rate, 1), "elapsed_s": round(now - self.started, 1),
            "depth_gate": self.detector.gate, "out": self.config.out,
            "state": self.config.state_dir, "db_workers": db, "strategy_workers": sw,
            "updated_at": now}
        if force or now - self.last_status_write >= 1.0:
            self.last_status_write = now
            write_json(self.config.state_dir, STATUS, self.last_status)
        return self.last_status

    async def status(self) -> dict[str, Any]:
        """A fresh status snapshot (the last one taken, once the workers are shut down)."""
        self._ensure_loop()
        if not self.closed:
            await self._refresh_status()
        return dict(self.last_status, phase=str(self.phase), reason=self.reason)

    async def shutdown(self) -> None:
        """Stop everything, close the stores and end the workers (the state stays on disk)."""
        if not self.phase.terminal:
            await self._end(Phase.STOPPED, "shut down")
        self.closed = True
        await asyncio.gather(*(w.close.remote() for w in self.db_workers + self.strategy_workers),
                             return_exceptions=True)
        for w in self.db_workers + self.strategy_workers:
            ray.kill(w)


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(Coordinator)
