"""Fetch workers: stateless actors that run spider-feed batches, and the DB worker's pool of them.

A fetch worker decides nothing and keeps no crawl state: a spider-feed batch goes in, the spider
log (pages, links) and the robots.txt fetches it made come out.  It is an actor rather than a
task so that batches can overlap on one event loop: a batch alone leaves the CPU idle while
its first requests are out and through its slowest responses, and with network latency that
idle time was 40% of a batch; the other batches' requests fill it.  The requests in flight stay
bounded by ``fetch_concurrency`` per worker, whatever the number of batches it runs.  Between
batches the worker keeps one HTTP session (keep-alive connections, a third of the requests
were TCP connects without it).

Each DB worker owns the fetch workers it starts (they die with it) and holds one CPU per worker,
as many as its part of the crawl's share of the cluster's CPUs (``set_fetch_quota``); it lets
them go when it pauses or drains, so a paused or ended crawl holds no CPU.  When the crawl has
fewer fetch workers than DB workers, a DB worker without any runs its batches as a guest of a
peer that has some (its *lenders*, named by the coordinator): the peer runs them on its pool,
under its fault model, and streams the rows back.  Fetch workers hold no crawl state, so any of
them may run any DB worker's batch; the batch's hosts stay leased by their own DB worker.
Before guests, such a crawl moved its fetch workers between DB workers in turn, starting a new
one (a process: seconds) at every move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any

import pyarrow as pa
import ray

from raycrawl.coordinator.sharing import BATCHES_PER_WORKER, workers_for
from raycrawl.fetch.bounds import feed_bound_s
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.rerun import Fault, Rerun, Sink
from raycrawl.fetch.result import FetchResult
from raycrawl.storage.location import is_local

from .options import fetcher_options

log = logging.getLogger(__name__)


class NotLending(Exception):
    """A DB worker asked to run a peer's batch while it lends no fetch worker (it pauses,
    drains or has no quota): nothing of the batch was fetched."""


class FetchWorker:
    """A fetch worker: runs spider-feed batches for one crawl's DB worker; safe to call
    concurrently.  A shell whose work (:class:`actors.fetch_worker.Fetcher`) is imported when
    the actor starts, in its own process: the DB worker that creates it never loads the fetch
    path (0.3 s of CPU at every DB worker's and coordinator's start, benchmarks/README.md)."""

    def __init__(self, options: FetchOptions, name: str = "fetcher") -> None:
        from .fetch_worker import Fetcher  # here: in the fetch worker's process only

        self.work = Fetcher(options, name)

    async def fetch(self, feed: pa.RecordBatch) -> AsyncGenerator[tuple[list[str], FetchResult]]:
        """A Ray streaming generator of (hosts, their rows) as each host ends (see
        ``raycrawl.fetch.batch.fetch_hosts``)."""
        async with contextlib.aclosing(self.work.fetch(feed)) as parts:
            async for part in parts:
                yield part

    async def close(self) -> None:
        """Close the HTTP session and the WARC file before the worker is ended."""
        await self.work.close()

    async def publish_warc(self) -> None:
        """Close the WARC file (uploaded, with an ``OUT`` elsewhere); the next record opens
        another."""
        await self.work.publish_warc()

    async def browser_stats(self) -> dict[str, int] | None:
        """The browser worker's stats (None: none started)."""
        return await self.work.browser_stats()


_REMOTE_FETCH_WORKER = ray.remote(FetchWorker)


class FetchPool:
    """The fetch workers of one DB worker, as many as its quota of the crawl's CPU share.

    All Ray calls on fetch workers are made here.  A worker that dies is restarted by Ray; the
    feeds it was running are run again under the fault model of ``raycrawl.fetch.rerun``
    (:meth:`run`).  When the quota shrinks (another crawl started on the cluster, or the
    cluster lost CPUs) the surplus workers retire: they take no new batch, and end (HTTP
    session closed) once their batches are done, so a smaller share is not a fault that
    fetches anything twice.
    """

    def __init__(self, options: FetchOptions, name_prefix: str, solo_tries: int,
                 ready_timeout_s: float = 60.0) -> None:
        self.options = options
        # A worker's close uploads its last WARC file when OUT is not on this disk.
        self.close_timeout_s = (UPLOAD_CLOSE_TIMEOUT_S if options.warc_dir is not None
                                and not is_local(options.warc_dir) else CLOSE_TIMEOUT_S)
        self.prefix = f"{name_prefix}/fetcher-{secrets.token_hex(3)}"
        self.workers: list[_Worker] = []
        self.retiring: list[_Worker] = []
        self.created = 0
        self.ready_timeout_s = ready_timeout_s
        self.rerun = Rerun(self._attempt, solo_tries)
        self.guest_rerun = Rerun(self._own_attempt, solo_tries)  # peers' feeds run here
        self.lenders: list[Any] = []  # peer DB workers that run this one's batches as guests
        self.lent = 0  # calls handed to a lender (its batches run as a guest)
        self.refused = 0  # calls a lender refused (it paused, drained or lost its quota)

    def lend_from(self, lenders: list[Any]) -> None:
        """Run batches on these peer DB workers' fetch workers while holding none."""
        self.lenders = list(lenders)

    @property
    def slots(self) -> int:
        """Batches that may be fetching at once (a worker's worth as a lender's guest)."""
        return BATCHES_PER_WORKER * (len(self.workers) or bool(self.lenders))

    @property
    def faults(self) -> int:
        """Calls on its fetch workers that failed, its own feeds' and its guests'."""
        return self.rerun.faults + self.guest_rerun.faults

    @property
    def size(self) -> int:
        """Fetch workers (one CPU each) this pool holds, retiring ones included."""
        return len(self.workers) + len(self.retiring)

    def fit(self, batches_in_flight: int | None, quota: int) -> int:
        """Size the pool to ``quota`` workers (fewer if ``batches_in_flight`` needs fewer: three
        batches a worker) and return the batches that may fetch at once."""
        size = quota if batches_in_flight is None else min(quota,
                                                           workers_for(batches_in_flight))
        self.resize(size)
        return self.slots if batches_in_flight is None else min(batches_in_flight, self.slots)

    def resize(self, size: int) -> None:
        """Have ``size`` workers (new ones start in the background; surplus ones retire).  A
        worker still retiring is taken back before a new one starts: a share that shrinks and
        grows again before its batches end holds no more workers than it is granted."""
        while len(self.workers) > size:
            self.retiring.append(self.workers.pop())
        while len(self.workers) < size and self.retiring:
            self.workers.append(self.retiring.pop())
        self._reap()
        while len(self.workers) < size:
            name = f"{self.prefix}-{self.created}"
            actor = _REMOTE_FETCH_WORKER.options(**fetcher_options(name)).remote(self.options,
                                                                                 name)
            self.created += 1
            self.workers.append(_Worker(actor))

    def _reap(self) -> None:
        """End the retiring workers whose batches are done."""
        idle = [w for w in self.retiring if w.load == 0]
        self.retiring = [w for w in self.retiring if w.load > 0]
        for worker in idle:
            _end(worker.actor, self.close_timeout_s)

    async def run(self, feed: pa.RecordBatch, sink: Sink) -> None:
        """Every request of ``feed`` fetched, whatever happens to the workers, each host's rows
        handed to ``sink`` once, when its fetch ends; a URL that kills its worker when fetched
        alone, again and again, ends as ``fetch-task-failed``."""
        await self.rerun.run(feed, sink)

    async def _attempt(self, feed: pa.RecordBatch, rerun: bool, sink: Sink) -> Fault | None:
        """One call on the least busy worker, its hosts handed to ``sink`` as they end;
        before a re-run, wait (bounded) for the worker to answer, so a call is not wasted on
        a worker that is still restarting.  Without a worker of its own, a call on a lender
        (:meth:`_as_guest`)."""
        if not self.workers and self.lenders:
            return await self._as_guest(feed, rerun, sink)
        return await self._own_attempt(feed, rerun, sink)

    async def _own_attempt(self, feed: pa.RecordBatch, rerun: bool, sink: Sink) -> Fault | None:
        """:meth:`_attempt` on a worker of this pool, never on a lender."""
        if not self.workers:  # a re-run after the quota went to 0: one worker to finish it
            self.resize(1)
        worker = min(self.workers, key=lambda w: w.load)
        answering = not rerun or await self._answers(worker.actor)
        bound = feed_bound_s(feed, self.options)
        worker.load += 1
        try:
            await asyncio.wait_for(_streamed(worker.actor.fetch, feed, sink),
                                   None if bound is None else bound + self.ready_timeout_s)
            return None
        except TimeoutError:  # hung (or stopped): replaced, and the feed runs again
            log.warning("fetch of %d URLs did not end in %.0f s; replacing its worker",
                        feed.num_rows, bound)
            ray.kill(worker.actor, no_restart=False)
            return Fault("timeout", counted=answering)
        except ray.exceptions.RayError as exc:  # died, restarted, unreachable, or raised
            log.warning("fetch of %d URLs failed (%s)", feed.num_rows, exc)
            return Fault(str(exc), counted=answering)
        finally:
            worker.load -= 1
            if worker in self.retiring:
                self._reap()

    async def _as_guest(self, feed: pa.RecordBatch, rerun: bool, sink: Sink) -> Fault | None:
        """One call on a lender (in turn), which runs ``feed`` on its own fetch workers under
        its own fault model (a URL that kills its workers ends there).  A lender that dies,
        restarts or hangs is no fault of the feed's: not counted against it (up to the
        re-runs' cap on such faults, so nothing waits forever).  Bounded by the lender's
        own bound on its re-runs: every try of ``solo_tries`` again (``feed_bound_s`` plus
        the wait for a worker to answer), and once more.

        A lender that refuses (:class:`NotLending`: it pauses, drains or lost its quota
        since the coordinator named it) fetched nothing: the next one is asked, and with none
        left the feed runs on a fetch worker of this pool's own (started for it, it retires
        at the next cut if the quota is still 0)."""
        lenders = list(self.lenders)
        for turn in range(len(lenders)):
            lender = lenders[(self.lent + turn) % len(lenders)]
            fault = await self._on_lender(lender, feed, rerun, sink)
            if not isinstance(fault, NotLending):
                self.lent += 1
                return fault
            self.refused += 1
            log.info("%s; its batch goes elsewhere", fault)
        return await self._own_attempt(feed, rerun, sink)

    async def _on_lender(self, lender: Any, feed: pa.RecordBatch, rerun: bool, sink: Sink
                         ) -> Fault | NotLending | None:
        if rerun and not await self._answers(lender):
            return Fault("lender not answering", counted=False)
        bound = feed_bound_s(feed, self.options)
        tries = 3 + self.rerun.solo_tries
        try:
            await asyncio.wait_for(_streamed(lender.fetch_as_guest, feed, sink),
                                   None if bound is None
                                   else tries * (bound + self.ready_timeout_s))
            return None
        except TimeoutError:
            log.warning("a lender's fetch of %d URLs did not end in time", feed.num_rows)
            return Fault("lender timeout", counted=False)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, NotLending) or isinstance(getattr(exc, "cause", None),
                                                         NotLending):
                return NotLending(str(getattr(exc, "cause", exc)))
            log.warning("a lender's fetch of %d URLs failed (%s)", feed.num_rows, exc)
            return Fault(str(exc), counted=False)

    async def run_for_guest(self, feed: pa.RecordBatch, sink: Sink) -> None:
        """Run a peer's feed on this pool's workers (one is started if none is left: a
        quota that went to 0 meanwhile), under the same fault model as this worker's own
        (:meth:`run`), never on a lender of its own."""
        await self.guest_rerun.run(feed, sink)

    async def _answers(self, worker: Any) -> bool:
        try:
            await asyncio.wait_for(worker.__ray_ready__.remote(), self.ready_timeout_s)
            return True
        except (ray.exceptions.RayError, TimeoutError):
            return False

    async def publish_warc(self) -> None:
        """Every worker's WARC records written so far uploaded, when ``OUT`` is not on this
        disk (its files are spooled); raises if a worker does not answer within the close's
        bound (a restarted one uploads its predecessor's files when it starts)."""
        if self.options.warc_dir is None or is_local(self.options.warc_dir):
            return
        workers = [w.actor for w in [*self.workers, *self.retiring]]
        await asyncio.wait_for(asyncio.gather(*(w.publish_warc.remote() for w in workers)),
                               self.close_timeout_s)

    def release(self) -> None:
        """End every worker (batches still running on them fail)."""
        for worker in [*self.workers, *self.retiring]:
            _end(worker.actor, self.close_timeout_s)
        self.workers, self.retiring = [], []

    async def close(self) -> None:
        """End every worker and return once each closed its session (or was killed)."""
        self.release()
        if _ENDING:
            await asyncio.wait(list(_ENDING), timeout=self.close_timeout_s + 1)


async def _streamed(method: Any, feed: pa.RecordBatch, sink: Sink) -> None:
    """Call a streaming ``method`` (a fetch worker's ``fetch``, a lender's ``fetch_as_guest``)
    on ``feed``; each (hosts, rows) it yields to ``sink`` as it comes."""
    async for ref in method.remote(feed):
        hosts, result = await ref
        sink(hosts, FetchResult(*result))


class _Worker:
    """A fetch worker of the pool and the batches it is running."""

    __slots__ = ("actor", "load")

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.load = 0


def _end(actor: Any, timeout_s: float) -> None:
    """End a fetch worker: it closes its HTTP session (and WARC file) first, bounded by
    ``timeout_s``, then it is killed; without an event loop to wait on, it is killed at
    once."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        ray.kill(actor, no_restart=True)
        return
    task = loop.create_task(_close_then_kill(actor, timeout_s))
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)


_ENDING: set[asyncio.Task[None]] = set()  # closing workers (a task needs a reference)
CLOSE_TIMEOUT_S = 5.0
UPLOAD_CLOSE_TIMEOUT_S = 120.0  # a last WARC file of up to --warc-max-bytes uploaded


async def _close_then_kill(actor: Any, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(actor.close.remote(), timeout_s)
    except (ray.exceptions.RayError, TimeoutError):
        pass  # dead, or hung: killed all the same
    ray.kill(actor, no_restart=True)
