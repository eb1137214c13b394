"""Fetch workers: stateless actors that run spider-feed batches, and the DB worker's pool of them.

A fetch worker decides nothing and keeps no crawl state: a spider-feed batch goes in, the spider
log (pages, links) and the robots.txt fetches it made come out.  It is an actor rather than a
task so that batches can overlap on one event loop: a batch alone leaves the CPU idle while
its first requests are out and through its slowest responses, and with network latency that
idle time was 40% of a batch; the other batches' requests fill it.  The requests in flight stay
bounded by ``fetch_concurrency`` per worker, whatever the number of batches it runs.  Between
batches the worker keeps one HTTP session (keep-alive connections, a third of the requests
were TCP connects without it).

Each DB worker owns the fetch workers it uses (they die with it) and holds one CPU per worker,
as many as its share of the cluster's CPUs; it lets them go when it pauses or drains, so a
paused or ended crawl holds no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import aiohttp
import pyarrow as pa
import ray

from raycrawl.fetch.batch import (
    FetchResult,
    callback_runner,
    feed_bound_s,
    fetch_feed,
    warc_files,
)
from raycrawl.fetch.client import open_session
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.rerun import Fault, Rerun

from .options import FETCHER_CPUS, fetcher_options

log = logging.getLogger(__name__)

BATCHES_PER_WORKER = 3  # overlapping batches per fetch worker (benchmarks/README.md, step 13)


class FetchWorker:
    """Runs spider-feed batches for one crawl's DB worker; safe to call concurrently."""

    def __init__(self, options: FetchOptions, name: str = "fetcher") -> None:
        self.options = options
        # Its WARC files are named by its actor name, without the crawl id.
        self.warc = (warc_files(options, name.split("/", 1)[-1].replace("/", "-"))
                     if options.warc_dir is not None else None)
        self.session: aiohttp.ClientSession | None = None
        self.limit: asyncio.Semaphore | None = None
        # The spider instance (one per worker) and the thread its callbacks run on.
        self.callbacks = callback_runner(options) if options.spider is not None else None

    async def fetch(self, feed: pa.RecordBatch) -> FetchResult:
        """Fetch every request of ``feed``: (pages, links, robots, items); see ``fetch_feed``."""
        if self.session is None or self.session.closed:
            self.session = open_session(self.options)
            self.limit = asyncio.Semaphore(self.options.concurrency)
        return await fetch_feed(feed, self.options, self.session, self.limit, self.callbacks,
                                self.warc)


_REMOTE_FETCH_WORKER = ray.remote(FetchWorker)


class FetchPool:
    """The fetch workers of one DB worker, sized to its share of the CPUs.

    All Ray calls on fetch workers are made here.  A worker that dies is restarted by Ray; the
    feeds it was running are run again under the fault model of ``raycrawl.fetch.rerun``
    (:meth:`run`).  When the pool shrinks (the cluster lost CPUs) every worker is replaced: one
    whose node is gone waits for a CPU to restart on, and may be any of them; its batches fail
    and run again on the new ones.
    """

    def __init__(self, options: FetchOptions, name_prefix: str, solo_tries: int,
                 ready_timeout_s: float = 60.0) -> None:
        self.options = options
        self.prefix = f"{name_prefix}/fetcher-{secrets.token_hex(3)}"
        self.workers: list[Any] = []
        self.load: list[int] = []
        self.created = 0
        self.ready_timeout_s = ready_timeout_s
        self.cpus_read_at = -1e9
        self.cpu_share = 1
        self.rerun = Rerun(self._attempt, solo_tries)

    @property
    def slots(self) -> int:
        """Batches that may be fetching at once."""
        return BATCHES_PER_WORKER * len(self.workers)

    async def fit(self, batches_in_flight: int | None, db_workers: int) -> int:
        """Size the pool and return the batches that may fetch at once: ``batches_in_flight``
        (three per worker), or, when None, one worker per CPU of this DB worker's share of the
        cluster (re-read every 10 s, so a cluster that grows gets used and one that shrinks is
        not waited for)."""
        if batches_in_flight is not None:
            self.resize(-(-batches_in_flight // BATCHES_PER_WORKER))
            return batches_in_flight
        now = time.monotonic()
        if now - self.cpus_read_at >= 10.0 or not self.workers:
            self.cpus_read_at = now
            # Read off the event loop: the call blocks on the GCS.
            resources = await asyncio.to_thread(ray.cluster_resources)
            cpus = resources.get("CPU", 1.0)
            self.cpu_share = max(1, int(cpus / FETCHER_CPUS) // db_workers)
        self.resize(self.cpu_share)
        return self.slots

    def resize(self, size: int) -> None:
        """Have ``size`` workers (new ones start in the background)."""
        if len(self.workers) > size:
            while self.workers:
                self.load.pop()
                ray.kill(self.workers.pop(), no_restart=True)
        while len(self.workers) < size:
            name = f"{self.prefix}-{self.created}"
            actor = _REMOTE_FETCH_WORKER.options(**fetcher_options(name)).remote(self.options,
                                                                                 name)
            self.created += 1
            self.workers.append(actor)
            self.load.append(0)

    async def run(self, feed: pa.RecordBatch) -> FetchResult:
        """Every request of ``feed`` fetched, whatever happens to the workers; a URL that
        kills its worker when fetched alone, again and again, ends as ``fetch-task-failed``."""
        return await self.rerun.run(feed)

    async def _attempt(self, feed: pa.RecordBatch, rerun: bool) -> FetchResult | Fault:
        """One call on the least busy worker; before a re-run, wait (bounded) for it to
        answer, so a call is not wasted on a worker that is still restarting."""
        if not self.workers:
            self.resize(1)
        i = min(range(len(self.workers)), key=self.load.__getitem__)
        worker = self.workers[i]
        answering = not rerun or await self._answers(worker)
        bound = feed_bound_s(feed, self.options)
        self.load[i] += 1
        try:
            return FetchResult(*await asyncio.wait_for(
                worker.fetch.remote(feed), None if bound is None else bound + self.ready_timeout_s))
        except TimeoutError:  # hung (or stopped): replaced, and the feed runs again
            log.warning("fetch of %d URLs did not end in %.0f s; replacing its worker",
                        feed.num_rows, bound)
            ray.kill(worker, no_restart=False)
            return Fault("timeout", counted=answering)
        except ray.exceptions.RayError as exc:  # died, restarted, unreachable, or raised
            log.warning("fetch of %d URLs failed (%s)", feed.num_rows, exc)
            return Fault(str(exc), counted=answering)
        finally:
            if i < len(self.load) and self.workers[i] is worker:
                self.load[i] -= 1

    async def _answers(self, worker: Any) -> bool:
        try:
            await asyncio.wait_for(worker.__ray_ready__.remote(), self.ready_timeout_s)
            return True
        except (ray.exceptions.RayError, TimeoutError):
            return False

    def release(self) -> None:
        """End every worker (batches still running on them fail)."""
        self.resize(0)
