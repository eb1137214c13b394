"""The DB worker actor: queue and page metadata of its partitions, spider-feed batches."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from raycrawl import schemas
from raycrawl.config import CrawlConfig
from raycrawl.fetching import FetchOptions
from raycrawl.output import PagesWriter
from raycrawl.queue import Entry, FrontierQueue, HostSlots
from raycrawl.routing import split_by_owner
from raycrawl.storage import Store
from raycrawl.streams import StreamWriter, stream_path

from .fetch import fetch_batch

log = logging.getLogger(__name__)


def _feed(entries: list[Entry]) -> pa.RecordBatch:
    return schemas.batch(schemas.SPIDER_FEED, {
        "url": [e.url for e in entries], "fingerprint": [e.fingerprint for e in entries],
        "host": [e.host for e in entries], "partition": [e.partition for e in entries],
        "depth": [e.depth for e in entries], "score": [e.score for e in entries]})


def _failed_pages(entries: list[Entry], error: str) -> pa.RecordBatch:
    """Spider-log rows that end ``entries`` with ``error`` and no HTTP response."""
    n = len(entries)
    now = datetime.now(UTC)
    return schemas.batch(schemas.SPIDER_LOG_PAGES, {
        "url": [e.url for e in entries], "fingerprint": [e.fingerprint for e in entries],
        "host": [e.host for e in entries], "partition": [e.partition for e in entries],
        "depth": [e.depth for e in entries], "status": [None] * n, "content_type": [None] * n,
        "error": [error] * n, "fetched_at": [now] * n, "size_bytes": [0] * n,
        "duration_s": [0.0] * n, "links_count": [0] * n})


class DBWorker:
    """Owns the queue of a set of partitions; cuts polite spider-feed batches and runs them.

    A batch stays *in flight* from the cut until its spider log has been processed by the
    strategy workers (which return only once the links are queued) and its pages are recorded
    here; only then is the host released and the batch counted as completed.
    """

    def __init__(self, config: CrawlConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.store = Store(os.path.join(config.state_dir, f"db-worker-{index}"))
        self.queue = FrontierQueue(self.store, layered=config.max_depth is not None)
        self.slots = HostSlots(config.delay_s)
        self.output = PagesWriter(config.pages_dir, index, config.output_rows_per_file,
                                  config.output_flush_s)
        self.stream = (StreamWriter(stream_path(config.out, index, config.codec), config.codec)
                       if config.log_streams else None)
        self.fetch_options = FetchOptions.from_config(config)
        self.gate: int | None = 0 if config.max_depth is not None else None
        self.strategy_workers: list[Any] = []
        self.sw_owner = np.zeros(0, dtype=np.int64)
        self.coordinator: Any = None
        self.running = False
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.counters: Counter[str] = Counter()
        self.failures: Counter[int] = Counter()  # fingerprint -> failed batches it was in
        self.wakeup = asyncio.Event()
        self.loop_task: asyncio.Task[None] | None = None
        for batch_id in self.queue.stale_leases():  # left by an earlier incarnation
            self.queue.requeue(batch_id)

    def configure(self, strategy_workers: list[Any], sw_owner: list[int],
                  coordinator: Any) -> None:
        self.strategy_workers = strategy_workers
        self.sw_owner = np.asarray(sw_owner, dtype=np.int64)
        self.coordinator = coordinator

    def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Queue the scheduled rows of a scoring-log batch; durable when this returns.

        Idempotent: a URL enqueued here before is ignored."""
        cols = scoring.filter(scoring.column("schedule")).to_pydict()
        entries = [Entry(u, fp, h, p, d, s) for u, fp, h, p, d, s in zip(
            cols["url"], cols["fingerprint"], cols["host"], cols["partition"], cols["depth"],
            cols["score"])]
        added = self.queue.push(entries)
        if added:
            self.wakeup.set()
        return added

    def set_gate(self, gate: int | None) -> None:
        self.gate = gate
        self.wakeup.set()

    def start(self) -> None:
        """Start (or resume) cutting batches; returns at once."""
        self.running = True
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.get_running_loop().create_task(self._feed_loop())
        self.wakeup.set()

    def pause(self) -> None:
        """Cut no new batches; batches in flight complete."""
        self.running = False
        self.wakeup.set()

    async def drain(self) -> None:
        """Stop cutting, wait for every batch in flight, write buffered output."""
        self.pause()
        if self.in_flight:
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        self.output.flush()
        if self.stream is not None:
            self.stream.flush()

    def report(self) -> dict[str, Any]:
        c = self.counters
        return {
            "queued": self.queue.queued,
            "queued_at_gate": (self.queue.queued if self.gate is None
                               else self.queue.queued_up_to(self.gate)),
            "in_flight": len(self.in_flight),
            "activity": self.queue.enqueued_total + c["batches_cut"] + c["batches_done"],
            "fetched": c["fetched"], "errors": c["errors"], "rows_written":
                self.output.rows_written, **{k: v for k, v in c.items() if k.startswith("err:")},
        }

    async def _feed_loop(self) -> None:
        cfg = self.config
        while self.running:
            self.wakeup.clear()
            if len(self.in_flight) >= cfg.batches_in_flight:
                await asyncio.wait(list(self.in_flight.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            want = min(cfg.batch_size, self.queue.queued_up_to(self.gate)
                       if self.gate is not None else self.queue.queued)
            granted = want
            if want and cfg.max_pages is not None:
                granted = await self.coordinator.acquire_budget.remote(want)
            batch_id, entries = self.queue.cut(granted, cfg.host_batch_cap, self.slots,
                                               self.gate, scan_limit=max(1000, 20 * granted))
            if cfg.max_pages is not None and granted > len(entries):
                await self.coordinator.release_budget.remote(granted - len(entries))
            if not entries:
                self.output.flush_if_due()
                try:  # nothing to cut: wait for new work, a released host or a delay to pass
                    await asyncio.wait_for(self.wakeup.wait(), timeout=max(0.02, min(
                        cfg.delay_s, 0.25)))
                except TimeoutError:
                    pass
                continue
            self.counters["batches_cut"] += 1
            task = asyncio.get_running_loop().create_task(self._run_batch(batch_id, entries))
            self.in_flight[batch_id] = task

    async def _run_batch(self, batch_id: int, entries: list[Entry]) -> None:
        hosts = {e.host for e in entries}
        try:
            pages, links = await self._fetch(entries)
            await self._hand_over(pages, links)
            if self.stream is not None:
                self.stream.write_spider_log(pages, links)
            self._record(batch_id, pages)
        except Exception:  # a bug or a dead strategy worker: retry the URLs, a bounded number
            log.exception("batch %d failed", batch_id)
            self.counters["batches_failed"] += 1
            given_up = []
            for e in entries:
                self.failures[e.fingerprint] += 1
                if self.failures[e.fingerprint] > self.config.fetch_retries:
                    given_up.append(e)
            self.queue.requeue(batch_id, drop=frozenset(e.fingerprint for e in given_up))
            if given_up:  # end them visibly instead of crash-looping on them
                self._record(batch_id, _failed_pages(given_up, "internal-error"))
        finally:
            self.slots.release(hosts, time.monotonic())
            self.counters["batches_done"] += 1
            self.in_flight.pop(batch_id, None)
            self.wakeup.set()

    def _record(self, batch_id: int, pages: pa.RecordBatch) -> None:
        """Release the batch's leases, output each URL's row once, count outcomes."""
        fresh = self.queue.complete(batch_id, pages.column("fingerprint").to_pylist())
        if len(fresh) < pages.num_rows:
            pages = pages.filter(pc.is_in(pages.column("fingerprint"),
                                          value_set=pa.array(fresh, type=pa.uint64())))
        self.output.add(pages)
        errors = pages.column("error").drop_null()
        self.counters["fetched"] += pages.num_rows
        self.counters["errors"] += len(errors)
        for kind, n in Counter(errors.to_pylist()).items():
            self.counters[f"err:{kind}"] += n

    async def _fetch(self, entries: list[Entry]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """Run the fetch task, retrying a task that died; after ``fetch_retries`` the URLs end
        as ``fetch-task-failed`` errors instead of stalling the crawl."""
        feed = _feed(entries)
        for attempt in range(self.config.fetch_retries + 1):
            try:
                return await fetch_batch.remote(feed, self.fetch_options)
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.TaskCancelledError) as exc:
                log.warning("fetch task failed (attempt %d): %s", attempt + 1, exc)
        return _failed_pages(entries, "fetch-task-failed"), schemas.empty(
            schemas.SPIDER_LOG_LINKS)

    async def _hand_over(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        """Send each strategy worker the pages and links of its partitions; return when all
        of them have processed theirs (and queued the links they scheduled)."""
        page_parts = split_by_owner(pages, self.sw_owner)
        link_parts = split_by_owner(links, self.sw_owner)
        calls = []
        for w in set(page_parts) | set(link_parts):
            calls.append(self.strategy_workers[w].process_spider_log.remote(
                page_parts.get(w, schemas.empty(schemas.SPIDER_LOG_PAGES)),
                link_parts.get(w, schemas.empty(schemas.SPIDER_LOG_LINKS))))
        await asyncio.gather(*calls)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.store.close()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(DBWorker)
