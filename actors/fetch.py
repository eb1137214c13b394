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
import secrets
from typing import Any

import aiohttp
import pyarrow as pa
import ray

from raycrawl.fetch.batch import FetchOptions, fetch_feed, open_session

from .options import fetcher_options

BATCHES_PER_WORKER = 3  # overlapping batches per fetch worker (benchmarks/README.md, step 13)


class FetchWorker:
    """Runs spider-feed batches for one crawl's DB worker; safe to call concurrently."""

    def __init__(self, options: FetchOptions) -> None:
        self.options = options
        self.session: aiohttp.ClientSession | None = None
        self.limit: asyncio.Semaphore | None = None

    async def fetch(self, feed: pa.RecordBatch) -> tuple[
            pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
        """Fetch every request of ``feed``: (pages, links, robots); see ``fetch_feed``."""
        if self.session is None or self.session.closed:
            self.session = open_session(self.options)
            self.limit = asyncio.Semaphore(self.options.concurrency)
        return await fetch_feed(feed, self.options, self.session, self.limit)


_REMOTE_FETCH_WORKER = ray.remote(FetchWorker)


class FetchPool:
    """The fetch workers of one DB worker, sized to its share of the CPUs.

    All Ray calls on fetch workers are made here.  A worker that dies is restarted by Ray (its
    batches fail with a ``RayError`` and the DB worker re-runs them).  When the pool shrinks
    (the cluster lost CPUs) every worker is replaced: one whose node is gone waits for a CPU
    to restart on, and may be any of them; its batches fail and run again on the new ones.
    """

    def __init__(self, options: FetchOptions, name_prefix: str) -> None:
        self.options = options
        self.prefix = f"{name_prefix}/fetcher-{secrets.token_hex(3)}"
        self.workers: list[Any] = []
        self.load: list[int] = []
        self.created = 0

    @property
    def slots(self) -> int:
        """Batches that may be fetching at once."""
        return BATCHES_PER_WORKER * len(self.workers)

    def resize(self, size: int) -> None:
        """Have ``size`` workers (new ones start in the background)."""
        if len(self.workers) > size:
            while self.workers:
                self.load.pop()
                ray.kill(self.workers.pop(), no_restart=True)
        while len(self.workers) < size:
            actor = _REMOTE_FETCH_WORKER.options(
                **fetcher_options(f"{self.prefix}-{self.created}")).remote(self.options)
            self.created += 1
            self.workers.append(actor)
            self.load.append(0)

    async def fetch(self, feed: pa.RecordBatch) -> tuple[
            pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
        """Run ``feed`` on the least busy worker; raises ``RayError`` if the worker died."""
        if not self.workers:
            self.resize(1)
        i = min(range(len(self.workers)), key=self.load.__getitem__)
        worker = self.workers[i]
        self.load[i] += 1
        try:
            return await worker.fetch.remote(feed)
        finally:
            if i < len(self.load) and self.workers[i] is worker:
                self.load[i] -= 1

    def release(self) -> None:
        """End every worker (batches still running on them fail)."""
        self.resize(0)
