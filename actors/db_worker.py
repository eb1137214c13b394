"""The DB worker actor: the feed loop of its shard, its fetch workers, its calls to peers.

Every decision about URLs and hosts is the shard's (``raycrawl.db_worker.shard.DBShard``); this
actor cuts batches while running, fetches them on its ``FetchPool``, hands the spider log to
the strategy workers and has the shard commit the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import pyarrow as pa
import ray

from raycrawl import faultpoints
from raycrawl.config import CrawlConfig
from raycrawl.coordinator.reports import DBWorkerReport
from raycrawl.db_worker.queue import Entry
from raycrawl.db_worker.ratelimit import TokenBucket, crawl_rate, split_rate
from raycrawl.db_worker.shard import DBShard
from raycrawl.errors import StorageError
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.rerun import Sink
from raycrawl.fetch.result import FetchResult
from raycrawl.formats import schemas
from raycrawl.formats.schemas import ended_rows
from raycrawl.formats.streams import StreamWriter, stream_place
from raycrawl.records import Record
from raycrawl.routing import not_owned
from raycrawl.storage.assignment import NotOwner, Role
from raycrawl.storage.checkpoints import StoreCheckpoints
from raycrawl.storage.identity import claim_store, prepare_store
from raycrawl.storage.moves import PartitionCopy

from .fetch import FetchPool, NotLending
from .gate import Gate
from .logs import tag_logs
from .metrics import CrawlMetrics
from .options import db_worker_name
from .peers import PeerFault, Peers

log = logging.getLogger(__name__)
GATHER_S = 0.02  # after a short batch, the next cut waits this long for more free hosts

PEER_BACKOFF_S = 2.0  # a peer failed a batch: wait this long before cutting the next
# While a batch fetches, the rows that came in are handed over this often (see
# DBWorker._fetch_and_hand_over): a link on a fast page waits no longer for its batch's slowest.
EARLY_HAND_OVER_S = 1.0


class DBWorker:
    """Owns the queue of a set of partitions; cuts polite spider-feed batches and runs them.

    A batch stays *in flight* from the cut until the strategy workers processed its spider log
    (they return once its links are queued) and its pages are recorded here.  Each of its hosts
    is released when that host's own fetch ends (its delay runs from then): the fetch worker
    streams the hosts' rows as they end.  Batches fetching are limited by
    ``FetchPool.fit``; a batch handing over no longer holds a fetch slot, and at most as many
    again may be handing over.
    """

    def __init__(self, config: CrawlConfig, index: int) -> None:
        tag_logs(config.crawl_id, f"db-worker-{index}")
        self.config = config
        self.name = db_worker_name(config.crawl_id, index)
        self.index = index
        self.node = node = ray.util.get_node_ip_address()
        store = f"db-worker-{index}"
        rollback = prepare_store(config.state_dir, config.out, bool(config.checkpoint_every_s),
                                 store, self.name, node)
        self.peers = Peers(config)
        self.shard = DBShard(config, index, self.peers.assignment.owned(Role.DB, index),
                             on_file_written=lambda: self._fault_point("db-worker.output-written"))
        self.lineage = claim_store(self.shard.store, config.out, config.crawl_id, store,
                                   self.name, node, rollback).lineage
        self.checkpoints = StoreCheckpoints(self.shard.store, config.out, config.state_dir, store)
        self.hand_overs = Gate()  # closed while the crawl's checkpoint is cut
        self.hold_token = ""
        self.stream = None
        if config.log_streams:
            path, upload = stream_place(config.out, config.state_dir, index, config.codec)
            self.stream = StreamWriter(path, config.codec, upload)
        self.fetchers = FetchPool(FetchOptions.from_config(config),
                                  db_worker_name(config.crawl_id, index),
                                  solo_tries=config.fetch_retries + 1,
                                  ready_timeout_s=config.actor_timeout_s)
        self.gate: int | None = 0 if config.max_depth is not None else None
        # Fetch workers this worker may hold: its part of the crawl's share of the cluster's
        # CPUs, set by the coordinator (None until it did: nothing is fetched before).
        self.fetch_quota: int | None = None
        self.lenders: tuple[int, ...] = ()  # peers whose fetch workers it uses, holding none
        self.guests: set[asyncio.Task[None]] = set()  # peers' batches on its fetch workers
        # Its part of the crawl's --max-rate (see raycrawl.db_worker.ratelimit): an equal one
        # until the coordinator splits the rate by who has work.
        rate = crawl_rate(config)
        self.rate: TokenBucket | None = None
        if rate is not None:
            workers = self.peers.assignment.workers[Role.DB]
            part, burst = split_rate(*rate, [True] * workers)[0]
            self.rate = TokenBucket(part, burst, time.monotonic())
        self.metrics = CrawlMetrics(config.crawl_id, f"db-worker-{index}")
        self.running = False
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.fetching: set[int] = set()  # batches being fetched
        self.loop_errors = 0
        self.timers: dict[str, float] = {"fetch_s": 0.0, "hand_over_s": 0.0}  # seconds, summed
        self.wakeup = asyncio.Event()
        self.loop_task: asyncio.Task[None] | None = None
        self.peer_trouble_until = 0.0  # after a peer fault, cut nothing for a moment
        self.storage_error = ""
        self.faults_seen = 0  # fetch faults when the WARC files were last repaired

    def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Queue the scheduled rows of a scoring-log batch; durable when this returns, and
        idempotent (see ``DBShard.enqueue``)."""
        foreign = not_owned((scoring,), self.shard.accepting)
        if foreign:  # moved here since this worker last read the assignment?
            self.sync()
            foreign = not_owned((scoring,), self.shard.accepting)
        if foreign:
            raise NotOwner(self.name, foreign, self.peers.assignment.epoch)
        try:
            added = self.shard.enqueue(scoring)
        except StorageError as exc:
            self._storage_failed(exc)
            raise
        if added:
            self.wakeup.set()
        return added

    # -- a partition's move (see raycrawl.coordinator.rescale) ------------------------------

    def fence(self, partitions: list[int]) -> int:
        """Cut nothing more of ``partitions``; returns how many of their URLs are leased."""
        n = self.shard.fence(partitions)
        self.wakeup.set()
        return n

    def export_partitions(self, partitions: list[int]) -> list[PartitionCopy]:
        copies = [self.shard.export_partition(p) for p in partitions]
        self._fault_point("db-worker.exported")
        return copies

    def adopt_partitions(self, copies: list[PartitionCopy]) -> None:
        for copy in copies:
            self.shard.adopt_partition(copy)
        self._fault_point("db-worker.adopted")

    # -- the crawl's checkpoint (see raycrawl.storage.checkpoints) ---------------------------

    async def hold(self, token: str, timeout_s: float) -> None:
        """Start no hand-over; returns once none is under way.  Held until :meth:`release`
        with ``token``, or ``timeout_s`` (a coordinator that died meanwhile holds nothing)."""
        self.hold_token = token
        asyncio.get_running_loop().call_later(timeout_s, self._unhold, token)
        await self.hand_overs.close()

    def checkpoint(self, epoch: int) -> None:
        if self.hand_overs.is_open:
            raise RuntimeError(f"{self.name}: checkpoint {epoch} asked for while not held")
        self.checkpoints.create(epoch)

    def release(self, token: str) -> bool:
        """Hand over again; whether it was held by ``token`` until now (not timed out)."""
        held = self.hold_token == token and not self.hand_overs.is_open
        self._unhold(token)
        return held

    def _unhold(self, token: str) -> None:
        if self.hold_token == token:
            self.hold_token = ""
            self.hand_overs.open()

    async def upload_checkpoint(self, epoch: int) -> dict[str, Any]:
        """Upload the store's checkpoint, once everything its rows point to went up: its
        fetch workers' WARC files (closed, so uploaded) and its stream.  A node lost later
        takes none of what the checkpoint's rows name with it."""
        await self.fetchers.publish_warc()
        if self.stream is not None:  # (its whole frames, uploaded while hand-overs go on)
            await asyncio.to_thread(self.stream.publish, self.stream.flush())
        return await asyncio.to_thread(self.checkpoints.upload, epoch, self.lineage)

    def queued_by_partition(self) -> dict[int, int]:
        """URLs queued in each partition it owns (a rescale balances by them)."""
        return dict(self.shard.queue.by_part)

    def sync(self) -> None:
        """Read the assignment; own the partitions it names this worker's owner of."""
        self.shard.take(self.peers.reload().owned(Role.DB, self.index))
        self.wakeup.set()

    def drop_partitions(self, partitions: list[int]) -> None:
        for p in partitions:
            self.shard.drop_partition(p)
        self._fault_point("db-worker.dropped")

    def set_gate(self, gate: int | None) -> None:
        self.gate = gate
        self.wakeup.set()

    def set_fetch_quota(self, quota: int, lenders: tuple[int, ...] = ()) -> None:
        """Hold at most ``quota`` fetch workers (surplus ones retire once their batches end);
        holding none, run batches as a guest of the DB workers ``lenders`` (indexes)."""
        self.fetch_quota = quota
        self.lenders = tuple(lenders)
        handles = []
        for index in self.lenders:
            try:
                handles.append(self.peers.db_worker(index).actor)
            except PeerFault as exc:  # retired meanwhile: the coordinator names others
                log.warning("lender %d: %s", index, exc)
        self.fetchers.lend_from(handles)
        self.wakeup.set()

    async def fetch_as_guest(self, feed: pa.RecordBatch
                             ) -> AsyncGenerator[tuple[list[str], FetchResult]]:
        """Run a peer's batch on this worker's fetch workers (see ``actors.fetch``); a Ray
        streaming generator of (hosts, rows) as hosts end, like a fetch worker's.  It counts
        as one of this worker's batches fetching: its own cuts wait for the slot.

        Refused (:class:`NotLending`, before anything is fetched) once this worker pauses,
        drains or holds no quota: a drain waits for the guests it took, and a batch taken
        after would run on fetch workers the drain lets go (or the retiring worker's kill
        ends), so its requests in flight would be sent again."""
        if not self.running or not self.fetch_quota:
            raise NotLending(f"{self.name} lends no fetch worker now (paused, draining or "
                             f"without a quota)")
        parts: asyncio.Queue[tuple[list[str], FetchResult] | None] = asyncio.Queue()
        run = asyncio.get_running_loop().create_task(
            self.fetchers.run_for_guest(feed, lambda hosts, rows: parts.put_nowait((hosts, rows))))
        run.add_done_callback(lambda _: parts.put_nowait(None))
        self.guests.add(run)
        try:
            while (part := await parts.get()) is not None:
                yield part
            run.result()  # its error, if any
        finally:
            run.cancel()
            self.guests.discard(run)
            self.wakeup.set()
            self._release_if_idle()

    def set_rate(self, rate_s: float, burst: float) -> None:
        """Cut at most ``rate_s`` URLs a second, ``burst`` at once (its part of the crawl's
        --max-rate and --burst)."""
        if self.rate is not None:
            self.rate.set(rate_s, burst, time.monotonic())
            self.wakeup.set()

    def start(self, gate: int | None = None) -> None:
        """Start (or resume) cutting batches from layers up to ``gate``; returns at once
        (not after a storage error: that ends the crawl)."""
        self._fault_point("db-worker.start")
        if self.storage_error:
            return
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
        self._release_if_idle()

    def _release_if_idle(self) -> None:
        """Paused with no batch of its own or of a guest fetching: hold no fetch worker (no
        CPU)."""
        if not self.running and not self.fetching and not self.guests:
            self.fetchers.release()

    async def drain(self) -> None:
        """Stop cutting, wait for every batch in flight, write buffered output."""
        self.pause()
        if self.in_flight or self.guests:
            await asyncio.gather(*self.in_flight.values(), *self.guests, return_exceptions=True)
        self.fetchers.release()
        if self.fetchers.faults > self.faults_seen:  # one may have died mid-write
            self.shard.output.repair_warc(upload=False)  # (reads the files whole: not after
            # every drain; its fetch workers may still be closing theirs)
            self.faults_seen = self.fetchers.faults
        try:
            self.shard.flush()
        except StorageError as exc:  # the rows stay staged: a resume writes them
            self._storage_failed(exc)
        if self.stream is not None:
            self.stream.publish()

    def item_schema(self) -> pa.Schema | None:  # see actors.peers.conform_items
        return self.shard.output.item_schema()

    def conform_items(self, schema: pa.Schema) -> int:
        return self.shard.output.conform_items(schema)

    def grow_allowance(self, amount: int, grant: str) -> int:
        """More of the page budget (idempotent per ``grant``); durable on return."""
        allowance = self.shard.grow_allowance(amount, grant)
        self.wakeup.set()
        return allowance

    def shrink_allowance(self, to: int) -> int:
        """Give back allowance not held (never below what is held); durable on return."""
        return self.shard.shrink_allowance(to)

    def report(self) -> DBWorkerReport:
        report = self.shard.report(self.running, len(self.in_flight), self.gate,
                                   self.loop_errors, self.timers, self.storage_error,
                                   self.fetchers.faults,
                                   self.fetch_quota or len(self.lenders),  # (0: paused)
                                   self.rate is not None
                                   and self.rate.available(time.monotonic()) < 1).replace(
            node=self.node, fetch_quota=-1 if self.fetch_quota is None else self.fetch_quota,
            fetch_workers=self.fetchers.size, fetch_workers_started=self.fetchers.created,
            lenders=self.lenders, guest_calls=self.fetchers.lent,
            guest_refused=self.fetchers.refused,
            rate_s=self.rate.rate_s if self.rate else 0.0,
            rate_burst=self.rate.capacity if self.rate else 0.0)
        self.metrics.report(report, self.shard.slots.counts())
        return report

    def _storage_failed(self, exc: StorageError) -> None:
        """Stop cutting: the coordinator ends the crawl with the reason (resumable)."""
        log.error("%s", exc)
        self.storage_error = self.storage_error or str(exc)
        self.running = False

    async def _feed_loop(self) -> None:
        """Cut batches while running.  The loop never dies: a pass that fails is logged and
        counted (``loop_errors``), and the next one starts half a second later."""
        while self.running:
            try:
                await self._feed_once()
            except StorageError as exc:
                self._storage_failed(exc)
            except Exception:
                self.loop_errors += 1
                log.exception("feed loop pass failed")
                await asyncio.sleep(0.5)

    async def _feed_once(self) -> None:
        """One pass: wait for room, cut a batch and start it, or wait for work."""
        cfg = self.config
        self.wakeup.clear()
        self.peers.heartbeat()
        allowed = self.fetchers.fit(cfg.batches_in_flight, self.fetch_quota or 0)
        if time.monotonic() < self.peer_trouble_until:
            await asyncio.sleep(self.peer_trouble_until - time.monotonic())
            return
        if (len(self.fetching) + len(self.guests) >= allowed
                or len(self.in_flight) >= 2 * allowed):
            await self._wait(1.0)  # a fetch ends, a batch completes or the quota changes
            return
        wanted = self.shard.wanted(self.gate)
        if self.rate is not None:  # the crawl's --max-rate: a token a URL
            tokens = self.rate.available(time.monotonic())
            if tokens < 1:
                await self._wait(self.rate.wait_s(time.monotonic()))  # (or a new part)
                return
            wanted = min(wanted, tokens)
        batch_id, entries = self.shard.cut(wanted, self.gate)
        if self.rate is not None:
            self.rate.take(len(entries), time.monotonic())
        if not entries:
            self.shard.output.flush_if_due()
            # Nothing to cut: wait for new work, a released host or a delay to pass.
            await self._wait(max(0.02, min(cfg.delay_s, 0.25)))
            return
        self._fault_point("db-worker.cut")
        task = asyncio.get_running_loop().create_task(self._run_batch(batch_id, entries))
        self.in_flight[batch_id] = task
        if len(entries) < cfg.batch_size and self.fetching:
            # A short batch while others fetch: let more hosts come free before the next cut
            # (a batch has a fixed cost: Ray calls, a hand-over, a write; cut as hosts free
            # one by one, small pages cost 40% more CPU, benchmarks/README.md step 22).
            await asyncio.sleep(GATHER_S)

    async def _wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.wakeup.wait(), timeout=timeout_s)
        except TimeoutError:
            pass

    async def _run_batch(self, batch_id: int, entries: list[Entry]) -> None:
        shard = self.shard
        held = {e.host for e in entries}  # hosts this batch still holds
        requeued: set[int] = set()  # fingerprints given back while the batch went on
        committed = False
        try:
            triage = shard.triage(entries)
            if self.rate is not None and triage.ended:  # ended unrequested: no fetch
                self.rate.give_back(len(triage.ended), time.monotonic())
            fetched = _Fetched(shard, self.metrics, triage.fetch, held, batch_id, requeued)
            if triage.fetch:
                await self._fetch_and_hand_over(batch_id, triage.fetch, fetched)
            fetched.check()
            self._fault_point("db-worker.fetched")
            if triage.ended:
                fetched.settle(ended_rows(triage.ended), [e for e, _ in triage.ended])
            shard.release_hosts(held)  # the hosts that had nothing to fetch
            held.clear()
            await self._hand_over(*fetched.pending())
            self._fault_point("db-worker.handed-over")
            result = fetched.result()
            items_before = shard.output.items_total
            rows = shard.complete(batch_id, result.pages, items=result.items, entries=entries)
            committed = True
            self.metrics.committed(rows, len(requeued),
                                   shard.output.items_total - items_before)
            self._fault_point("db-worker.completed")
        except StorageError as exc:  # its leases stay in the store: a resume requeues them
            self._storage_failed(exc)
        except PeerFault as exc:  # not the URLs' fault: they go back as they were
            log.warning("batch %d given back: %s", batch_id, exc)
            if not committed:
                shard.give_back(batch_id, [e for e in entries if e.fingerprint not in requeued])
            self.peer_trouble_until = time.monotonic() + PEER_BACKOFF_S
        except Exception:  # a bug: retry the URLs, a bounded number of times
            log.exception("batch %d failed", batch_id)
            if not committed:
                shard.fail(batch_id, [e for e in entries if e.fingerprint not in requeued])
        finally:
            if held:
                shard.release_hosts(held)
            shard.finish_batch()
            self.in_flight.pop(batch_id, None)
            self.wakeup.set()

    async def _fetch_and_hand_over(self, batch_id: int, fetch: list[tuple[Entry, bool]],
                                   fetched: _Fetched) -> None:
        """Fetch a batch; while it runs, hand the rows that came in over to the strategy
        workers every ``EARLY_HAND_OVER_S`` (a slow page holds neither its siblings' links nor
        the other hosts' of its batch).  A batch that ends sooner hands over once, after."""
        task = asyncio.get_running_loop().create_task(self._fetch(batch_id, fetch, fetched.take))
        try:
            while not task.done():
                await asyncio.wait((task,), timeout=EARLY_HAND_OVER_S)
                if not task.done() and fetched.error is None:
                    await self._hand_over(*fetched.pending())
        except BaseException as exc:
            # A hand-over failed: the fetch ends first (its hosts are held until then).
            if isinstance(exc, asyncio.CancelledError):
                task.cancel()
            await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # seen: the hand-over's error is the one raised
            raise
        task.result()

    async def _hand_over(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        """The strategy workers process these rows (their links queued) when this returns."""
        if pages.num_rows == 0 and links.num_rows == 0:
            return
        started = time.monotonic()
        async with self.hand_overs.passing():
            await self.peers.hand_over(pages, links)
        self.timers["hand_over_s"] += time.monotonic() - started
        if self.stream is not None:
            self.stream.write_spider_log(pages, links)

    async def _fetch(self, batch_id: int, fetch: list[tuple[Entry, bool]], sink: Sink) -> None:
        started = time.monotonic()
        self.fetching.add(batch_id)
        try:
            await self.fetchers.run(self.shard.feed(fetch), sink)
        finally:
            self.fetching.discard(batch_id)
            self.wakeup.set()
            self._release_if_idle()
            self.timers["fetch_s"] += time.monotonic() - started

    def _fault_point(self, point: str) -> None:
        faultpoints.reach(point, self.config.state_dir)

    async def close(self) -> None:
        await self.fetchers.close()
        if self.stream is not None:
            self.stream.close()
        self.shard.close()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(DBWorker)


class _Fetched:
    """A batch's fetched rows as they come in: robots.txt fetches and cookies learnt, rows
    settled (retries taken out, health recorded once a host ends) and each host released when
    its own fetch ends, its delay running from then, so a slow host holds no other host of its
    batch; the URLs its part gives back (retries, robots.txt not read) are queued again then
    (their fingerprints added to ``requeued``), not when the batch ends.  The rows that stand
    wait in :meth:`pending` for the next hand-over.  An error here is kept for :meth:`check`
    (it must not stop the fetch that hands hosts over)."""

    def __init__(self, shard: DBShard, metrics: CrawlMetrics,
                 fetch: list[tuple[Entry, bool]], held: set[str], batch_id: int,
                 requeued: set[int]) -> None:
        self.shard, self.metrics, self.held = shard, metrics, held
        self.batch_id, self.requeued = batch_id, requeued
        self.by_fp: dict[int, Entry] = {}
        self.by_host: dict[str, list[Entry]] = {}
        for entry, _ in fetch:
            self.by_fp[entry.fingerprint] = entry
            self.by_host.setdefault(entry.host, []).append(entry)
        self.parts: list[FetchResult] = []
        self.pages: list[pa.RecordBatch] = []
        self.handed = (0, 0)  # pages, parts already handed over
        self.error: Exception | None = None

    def take(self, hosts: list[str], part: FetchResult) -> None:
        self.parts.append(part)
        if self.error is not None:
            return
        try:
            self.metrics.robots(self.shard.learn_robots(part.robots))
            self.shard.learn_cookies(part.cookies)
            rows = [self.by_fp[fp] for fp in part.pages.column("fingerprint").to_pylist()
                    if fp in self.by_fp]
            self.settle(part.pages, rows + [e for h in hosts for e in self.by_host.get(h, ())],
                        hosts)
        except Exception as exc:  # noqa: BLE001 (raised again by check, after the fetch)
            self.error = exc
            return
        mine = self.held.intersection(hosts)
        self.shard.release_hosts(mine)
        self.held -= mine

    def settle(self, pages: pa.RecordBatch, entries: list[Entry],
               ended: list[str] | None = None) -> None:
        """Keep the rows that stand; queue again at once the URLs that get another attempt."""
        kept, retry = self.shard.settle(pages, entries, ended)
        self.pages.append(kept)
        self.shard.requeue(self.batch_id, retry)
        self.requeued.update(e.fingerprint for e in retry)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def pending(self) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """The rows that stand and the links, of the parts not handed over yet."""
        pages, parts = self.handed
        self.handed = (len(self.pages), len(self.parts))
        return (_concat(self.pages[pages:], schemas.FetchOutcome),
                _concat([p.links for p in self.parts[parts:]], schemas.LinkFound))

    def result(self) -> FetchResult:
        """The batch's rows that stand, with every part's links and items."""
        parts = FetchResult.concat(self.parts)
        return parts._replace(pages=_concat(self.pages, schemas.FetchOutcome))


def _concat(batches: list[pa.RecordBatch], record: type[Record]) -> pa.RecordBatch:
    return pa.concat_batches(batches) if batches else record.empty()
