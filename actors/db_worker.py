"""The DB worker actor: queue and page metadata of its partitions, spider-feed batches."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from raycrawl.config import CrawlConfig
from raycrawl.fetch.batch import FetchOptions
from raycrawl.formats import schemas
from raycrawl.formats.output import DurableOutput, page_rows
from raycrawl.formats.storage import Store, WriteBatch
from raycrawl.formats.streams import StreamWriter, stream_path
from raycrawl.frontier.queue import Entry, FrontierQueue, HostSlots
from raycrawl.frontier.robots import RobotsCache, RobotsKind, RobotsPolicy, agent_token, origin_of
from raycrawl.frontier.routing import split_by_owner
from raycrawl.testing.faults import crash_point

from .fetch import BATCHES_PER_WORKER, FetchPool
from .options import FETCHER_CPUS, db_worker_name
from .peers import Peers

log = logging.getLogger(__name__)

# Outcomes worth another attempt (bounded by ``retries``); the host is backed off meanwhile.
RETRYABLE_ERRORS = frozenset({"timeout", "connection", "robots-unavailable"})
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_TASK_DIED = ray.exceptions.RayError  # the fetch raised, its worker or its node died
# Rows this worker ended without a connection: they say nothing of the host's health.
_NOT_FETCHED = frozenset({"robots", "robots-unavailable", "host-unreachable", "internal-error",
                          "quarantined", "fetch-task-failed"})


def _feed(entries: list[tuple[Entry, bool]], slots: HostSlots) -> pa.RecordBatch:
    return schemas.batch(schemas.SPIDER_FEED, {
        "url": [e.url for e, _ in entries], "fingerprint": [e.fingerprint for e, _ in entries],
        "host": [e.host for e, _ in entries], "partition": [e.partition for e, _ in entries],
        "depth": [e.depth for e, _ in entries], "score": [e.score for e, _ in entries],
        "attempts": [e.attempts for e, _ in entries],
        "redirect_chain": [list(e.redirect_chain) for e, _ in entries],
        "delay_s": [slots.delay(e.host) for e, _ in entries],
        "robots_needed": [needed for _, needed in entries]})


def _ended_rows(ended: list[tuple[Entry, str]]) -> pa.RecordBatch:
    """Spider-log rows for URLs that end without being fetched, each with its error kind."""
    n = len(ended)
    now = datetime.now(UTC)
    return schemas.batch(schemas.SPIDER_LOG_PAGES, {
        "url": [e.url for e, _ in ended], "fingerprint": [e.fingerprint for e, _ in ended],
        "host": [e.host for e, _ in ended], "partition": [e.partition for e, _ in ended],
        "depth": [e.depth for e, _ in ended], "status": [None] * n, "content_type": [None] * n,
        "error": [kind for _, kind in ended], "fetched_at": [now] * n, "size_bytes": [0] * n,
        "duration_s": [0.0] * n, "links_count": [0] * n,
        "attempts": [e.attempts for e, _ in ended],
        "redirect_chain": [list(e.redirect_chain) for e, _ in ended],
        "retry_after_s": [None] * n})


def _retryable(status: int | None, error: str | None) -> bool:
    return error in RETRYABLE_ERRORS or (error is None and status in RETRYABLE_STATUS)


class DBWorker:
    """Owns the queue of a set of partitions; cuts polite spider-feed batches and runs them.

    A batch stays *in flight* from the cut until its spider log has been processed by the
    strategy workers (which return only once the links are queued) and its pages are recorded
    here; only then is the batch counted as completed.  Its hosts are released when its fetch
    ends (their delay runs from then), so the next batch may take them meanwhile.  Batches
    fetching are limited to ``batches_in_flight`` (three per fetch worker of ``FetchPool``); a
    batch handing over its spider log no longer holds a fetch slot (its CPU goes to the next
    fetch), and at most as many again may be handing over.  Robots rules, host health
    (backoff, parking) and per-URL retries are decided here, because this worker is the only
    one that sees the hosts of its partitions.
    """

    def __init__(self, config: CrawlConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.store = Store(os.path.join(config.state_dir, f"db-worker-{index}"))
        self.queue = FrontierQueue(self.store, layered=config.max_depth is not None)
        self.slots = HostSlots(config.delay_s, config.retry_backoff_s, config.max_backoff_s,
                               config.host_park_after)
        self.robots = RobotsCache(self.store) if config.robots else None
        self.agent = agent_token(config.user_agent)
        self.output = DurableOutput(
            self.store, config.pages_dir, index, config.output_rows_per_file,
            config.output_flush_s,
            on_file_written=lambda: self._crash("db-worker.output-written"))
        self.stream = (StreamWriter(stream_path(config.out, index, config.codec), config.codec)
                       if config.log_streams else None)
        self.fetch_options = FetchOptions.from_config(config)
        self.fetchers = FetchPool(self.fetch_options, db_worker_name(config.crawl_id, index))
        self.gate: int | None = 0 if config.max_depth is not None else None
        self.peers = Peers(config)
        self.running = False
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.fetching: set[int] = set()  # batches being fetched
        self.leased_urls = 0
        self.counters: Counter[str] = Counter()
        self.timers: Counter[str] = Counter()  # seconds batches spent in each step, summed
        self.failures: Counter[int] = Counter()  # fingerprint -> failed batches it was in
        self.wakeup = asyncio.Event()
        self.loop_task: asyncio.Task[None] | None = None
        self.last_heartbeat = 0.0
        self.cpus_read_at = -1e9
        self.cpu_share = 1
        # Batches leased by an earlier incarnation that died: their URLs go back to the queue
        # with one more crash counted, except those that were in flight at too many deaths
        # (poison), which end now as ``quarantined`` — all in one atomic write per batch.
        for batch_id in self.queue.stale_leases():
            leased = self.queue.leased(batch_id)
            poison = [e for e in leased if e.crashes >= config.fetch_retries]
            back = [dataclasses.replace(e, crashes=e.crashes + 1) for e in leased
                    if e.crashes < config.fetch_retries]
            self._record(batch_id, _ended_rows([(e, "quarantined") for e in poison]), back)

    def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Queue the scheduled rows of a scoring-log batch; durable when this returns.  Rows
        with a ``skip`` kind (traps, host budget) end at once with that error.

        Idempotent: a URL enqueued here before is ignored."""
        cols = scoring.filter(scoring.column("schedule")).to_pydict()
        entries, ended = [], []
        for u, fp, h, p, d, s, chain, skip in zip(
                cols["url"], cols["fingerprint"], cols["host"], cols["partition"],
                cols["depth"], cols["score"], cols["redirect_chain"], cols["skip"]):
            entry = Entry(u, fp, h, p, d, s, 0, tuple(chain or ()))
            if skip is None:
                entries.append(entry)
            else:
                ended.append((entry, skip))
        if ended:
            self._record(0, _ended_rows(ended))
        added = self.queue.push(entries)
        if added:
            self.wakeup.set()
        return added

    def set_gate(self, gate: int | None) -> None:
        self.gate = gate
        self.wakeup.set()

    def start(self, gate: int | None = None) -> None:
        """Start (or resume) cutting batches from layers up to ``gate``; returns at once."""
        self.gate = gate if self.config.max_depth is not None else None
        self.running = True
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.get_running_loop().create_task(self._feed_loop())
        self.wakeup.set()

    def pause(self) -> None:
        """Cut no new batches; batches in flight complete (the fetch workers, and their CPUs,
        are let go once none is fetching)."""
        self.running = False
        self.wakeup.set()
        if not self.fetching:
            self.fetchers.release()

    async def drain(self) -> None:
        """Stop cutting, wait for every batch in flight, write buffered output."""
        self.pause()
        if self.in_flight:
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        self.fetchers.release()
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
            "leased_urls": self.leased_urls, "done_total": self.queue.done_total,
            "running": self.running,
            "activity": self.queue.enqueued_total + c["batches_cut"] + c["batches_done"],
            "fetched": c["fetched"], "errors": c["errors"], "retries": c["retries"],
            "loop_errors": c["loop_errors"],
            "robots_fetched": c["robots_fetched"], "parked_hosts": len(self.slots.parked),
            "rows_written": self.output.rows_written,
            **{k: round(v, 2) for k, v in self.timers.items()},
            **{k: v for k, v in c.items() if k.startswith(("err:", "retry:"))},
        }

    async def _feed_loop(self) -> None:
        """Cut batches while running.  The loop never dies: a pass that fails is logged and
        counted (``loop_errors``), and the next one starts half a second later."""
        while self.running:
            try:
                await self._feed_once()
            except Exception:
                self.counters["loop_errors"] += 1
                log.exception("feed loop pass failed")
                await asyncio.sleep(0.5)

    async def _feed_once(self) -> None:
        """One pass: wait for room, cut a batch and start it, or wait for work."""
        cfg = self.config
        self.wakeup.clear()
        await self._heartbeat()
        allowed = self._batches_allowed()
        if len(self.fetching) >= allowed or len(self.in_flight) >= 2 * allowed:
            try:  # a fetch ends or a batch completes (both set wakeup)
                await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)
            except TimeoutError:
                pass
            return
        want = min(cfg.batch_size, self.queue.queued_up_to(self.gate)
                   if self.gate is not None else self.queue.queued)
        granted = want
        if want and cfg.max_pages is not None:
            granted = await self.peers.coordinator().acquire_budget.remote(want)
        batch_id, entries = self.queue.cut(granted, cfg.host_batch_cap, self.slots, self.gate)
        try:
            await self._release_budget(granted - len(entries))
        except BaseException:  # the batch never started: its URLs go back
            if entries:
                self.queue.requeue(batch_id)
                self.slots.release({e.host for e in entries}, time.monotonic())
            raise
        if not entries:
            self.output.flush_if_due()
            try:  # nothing to cut: wait for new work, a released host or a delay to pass
                await asyncio.wait_for(self.wakeup.wait(), timeout=max(0.02, min(
                    cfg.delay_s, 0.25)))
            except TimeoutError:
                pass
            return
        self.counters["batches_cut"] += 1
        self.leased_urls += len(entries)
        self._crash("db-worker.cut")
        task = asyncio.get_running_loop().create_task(self._run_batch(batch_id, entries))
        self.in_flight[batch_id] = task

    def _batches_allowed(self) -> int:
        """``batches_in_flight``, or three per fetch worker, one fetch worker per CPU of this
        worker's share of the cluster (re-read every 10 s, so a cluster that grows gets used
        and one that shrinks is not waited for)."""
        wanted = self.config.batches_in_flight
        if wanted is None:
            now = time.monotonic()
            if now - self.cpus_read_at >= 10.0 or not self.fetchers.workers:
                self.cpus_read_at = now
                cpus = ray.cluster_resources().get("CPU", 1.0)
                self.cpu_share = max(1, int(cpus / FETCHER_CPUS) // self.config.db_workers)
            self.fetchers.resize(self.cpu_share)
            return self.fetchers.slots
        self.fetchers.resize(-(-wanted // BATCHES_PER_WORKER))
        return wanted

    async def _heartbeat(self) -> None:
        """Tell the coordinator we are alive every few seconds (a restarted coordinator
        resumes its reconcile loop on the first call it gets)."""
        now = time.monotonic()
        if now - self.last_heartbeat >= 2.0:
            self.last_heartbeat = now
            self.peers.coordinator().heartbeat.remote()

    async def _release_budget(self, unused: int) -> None:
        if unused > 0 and self.config.max_pages is not None:
            await self.peers.coordinator().release_budget.remote(unused)

    def _triage(self, entries: list[Entry]) -> tuple[list[tuple[Entry, bool]],
                                                     list[tuple[Entry, str]]]:
        """Split a cut into (entry, robots_needed) to fetch and (entry, kind) that end now:
        URLs of parked hosts and URLs their origin's cached robots.txt disallows."""
        fetch, ended = [], []
        for e in entries:
            parked = self.slots.parked.get(e.host)
            if parked is not None:
                ended.append((e, parked))
                continue
            needed = False
            if self.robots is not None:
                policy = self.robots.get(origin_of(e.url))
                if policy is None or policy.kind is RobotsKind.UNAVAILABLE:
                    needed = True
                elif not policy.allows(e.url, self.agent):
                    ended.append((e, "robots"))
                    continue
                else:
                    self.slots.crawl_delay[e.host] = policy.crawl_delay_s(self.agent)
            fetch.append((e, needed))
        return fetch, ended

    async def _run_batch(self, batch_id: int, entries: list[Entry]) -> None:
        hosts = {e.host for e in entries}
        released = False
        try:
            fetch, ended = self._triage(entries)
            if fetch:
                started = time.monotonic()
                self.fetching.add(batch_id)
                try:
                    pages, links, robots = await self._fetch(fetch)
                finally:
                    self.fetching.discard(batch_id)
                    self.wakeup.set()
                    if not self.running and not self.fetching:
                        self.fetchers.release()  # paused: hold no CPU
                self.timers["fetch_s"] += time.monotonic() - started
                self._learn_robots(robots)
            else:
                pages, links = (schemas.empty(schemas.SPIDER_LOG_PAGES),
                                schemas.empty(schemas.SPIDER_LOG_LINKS))
            self._crash("db-worker.fetched")
            if ended:
                pages = pa.concat_batches([pages, _ended_rows(ended)])
            pages, retry = self._retries(pages, entries)
            # The fetch is over and the hosts' health is recorded: their delay runs from now,
            # and the next batch may take them while this one hands its spider log over.
            self.slots.release(hosts, time.monotonic())
            released = True
            started = time.monotonic()
            await self._hand_over(pages, links)
            self.timers["hand_over_s"] += time.monotonic() - started
            self._crash("db-worker.handed-over")
            if self.stream is not None:
                self.stream.write_spider_log(pages, links)
            self._record(batch_id, pages, retry)
            self._crash("db-worker.completed")
            await self._release_budget(len(retry))
        except Exception:  # a bug or a dead strategy worker: retry the URLs, a bounded number
            log.exception("batch %d failed", batch_id)
            self.counters["batches_failed"] += 1
            given_up, back = [], []
            for e in entries:
                self.failures[e.fingerprint] += 1
                failed_too_often = self.failures[e.fingerprint] > self.config.fetch_retries
                (given_up if failed_too_often else back).append(e)
            # One atomic write: the others go back, these end visibly instead of looping.
            self._record(batch_id, _ended_rows([(e, "internal-error") for e in given_up]), back)
        finally:
            if not released:
                self.slots.release(hosts, time.monotonic())
            self.counters["batches_done"] += 1
            self.leased_urls -= len(entries)
            self.in_flight.pop(batch_id, None)
            self.wakeup.set()

    def _learn_robots(self, robots: pa.RecordBatch) -> None:
        """Cache the robots.txt fetches; an unreachable one pushes its host back, and parks
        it after ``host_park_after`` failures in a row."""
        if self.robots is None:
            return
        now_wall, now = time.time(), time.monotonic()
        cfg = self.config
        for row in robots.to_pylist():
            origin = row["origin"]
            previous = self.robots.stored(origin)
            policy = RobotsPolicy.from_fetch(row["status"], row["body"] or b"", now_wall,
                                             cfg.robots_ttl_s, cfg.robots_retry_s,
                                             previous.failures if previous else 0)
            self.robots.put(origin, policy)
            self.counters["robots_fetched"] += 1
            host = row["host"]
            self.slots.crawl_delay[host] = policy.crawl_delay_s(self.agent)
            if policy.kind is RobotsKind.UNAVAILABLE:
                self.slots.push_back(host, now + cfg.robots_retry_s)
                if policy.failures >= cfg.host_park_after:
                    self.slots.park(host, "robots-unavailable")

    def _retries(self, pages: pa.RecordBatch, entries: list[Entry]) -> tuple[pa.RecordBatch,
                                                                              list[Entry]]:
        """Take out the rows that get another attempt, each after its own exponential backoff
        (its host's other URLs go on); a Retry-After pushes the whole host back.  A host whose
        every request failed to connect or timed out counts a failure (see
        ``HostSlots.record_outcome``); one that answered, even 5xx, is up."""
        cfg = self.config
        by_fp = {e.fingerprint: e for e in entries}
        now = time.monotonic()
        keep, retry = [], []
        healthy: dict[str, bool] = {}
        rows = pages.select(["fingerprint", "host", "status", "error", "retry_after_s"])
        for i, (fp, host, status, error, after) in enumerate(zip(*rows.to_pydict().values())):
            failed = _retryable(status, error)
            if error not in _NOT_FETCHED:  # a host that answered at all is reachable
                healthy[host] = healthy.get(host, False) or error not in RETRYABLE_ERRORS
            if after is not None:
                self.slots.push_back(host, now + min(after, cfg.max_retry_after_s))
            entry = by_fp.get(fp)
            if failed and entry is not None and entry.attempts < cfg.retries:
                backoff = cfg.retry_backoff_s * 2 ** entry.attempts
                retry.append(dataclasses.replace(entry, attempts=entry.attempts + 1,
                                                 not_before=time.time() + backoff))
                self.counters[f"retry:{error or status}"] += 1
            else:
                keep.append(i)
        for host, ok in healthy.items():
            self.slots.record_outcome(host, ok, now)
        self.counters["retries"] += len(retry)
        if len(keep) < pages.num_rows:
            pages = pages.take(pa.array(keep, type=pa.int64()))
        return pages, retry

    def _record(self, batch_id: int, pages: pa.RecordBatch, retry: list[Entry] = ()) -> None:
        """Complete a batch in one atomic write: release its leases, queue its retries, and
        stage each URL's output row once (a URL completed before gets no second row)."""
        written: list[Callable[[], None]] = []

        def stage(wb: WriteBatch, fresh: list[int]) -> None:
            rows = pages
            if len(fresh) < pages.num_rows:
                rows = pages.filter(pc.is_in(pages.column("fingerprint"),
                                             value_set=pa.array(fresh, type=pa.uint64())))
            if rows.num_rows:
                written.append(self.output.stage(wb, page_rows(rows)))
            errors = rows.column("error").drop_null()
            self.counters["fetched"] += rows.num_rows
            self.counters["errors"] += len(errors)
            for kind, n in Counter(errors.to_pylist()).items():
                self.counters[f"err:{kind}"] += n

        self.queue.complete(batch_id, pages.column("fingerprint").to_pylist(), retry, stage)
        for done in written:
            done()
        self.output.flush_if_due()

    async def _fetch(self, fetch: list[tuple[Entry, bool]]) -> tuple[
            pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
        """Fetch a batch on a fetch worker.  If that fails (the worker died), each host's URLs
        are fetched again in a call of their own, and a host whose call fails again one URL at
        a time, so a URL that kills its worker (poison) ends as ``fetch-task-failed`` alone."""
        try:
            return await self.fetchers.fetch(_feed(fetch, self.slots))
        except _TASK_DIED as exc:
            log.warning("fetch of %d URLs failed (%s); isolating", len(fetch), exc)
        by_host: dict[str, list[tuple[Entry, bool]]] = {}
        for item in fetch:
            by_host.setdefault(item[0].host, []).append(item)
        parts = await asyncio.gather(*(self._fetch_isolated(items) for items in by_host.values()))
        return tuple(pa.concat_batches([p[i] for p in parts]) for i in range(3))  # type: ignore

    async def _fetch_isolated(self, items: list[tuple[Entry, bool]]) -> tuple[
            pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
        try:
            return await self.fetchers.fetch(_feed(items, self.slots))
        except _TASK_DIED:
            if len(items) == 1:
                self.counters["poisoned"] += 1
                return (_ended_rows([(items[0][0], "fetch-task-failed")]),
                        schemas.empty(schemas.SPIDER_LOG_LINKS), schemas.empty(schemas.ROBOTS))
        parts = []
        for item in items:  # one at a time: the host's politeness still holds
            parts.append(await self._fetch_isolated([item]))
        return tuple(pa.concat_batches([p[i] for p in parts]) for i in range(3))  # type: ignore

    async def _hand_over(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        """Send each strategy worker the pages and links of its partitions; return when all
        of them have processed theirs (and queued the links they scheduled)."""
        page_parts = split_by_owner(pages, self.peers.sw_owner)
        link_parts = split_by_owner(links, self.peers.sw_owner)
        calls = []
        for w in set(page_parts) | set(link_parts):
            calls.append(self.peers.strategy_worker(w).process_spider_log.remote(
                page_parts.get(w, schemas.empty(schemas.SPIDER_LOG_PAGES)),
                link_parts.get(w, schemas.empty(schemas.SPIDER_LOG_LINKS))))
        await asyncio.gather(*calls)

    def _crash(self, point: str) -> None:
        crash_point(point, self.config.crash_points, self.config.state_dir)

    def close(self) -> None:
        self.fetchers.release()
        if self.stream is not None:
            self.stream.close()
        self.store.close()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(DBWorker)
