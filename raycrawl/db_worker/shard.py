"""A DB worker's shard of the frontier, without Ray: queue, host health, robots, output.

The DB worker actor (``actors/db_worker.py``) runs the loop, the fetch workers and the calls to
its peers; every decision about URLs and hosts is made here:

1. :meth:`DBShard.enqueue` queues what the strategy workers scheduled;
2. :meth:`DBShard.cut` leases a polite batch, :meth:`DBShard.triage` ends the URLs of parked
   hosts and those the cached robots.txt disallows, :meth:`DBShard.feed` builds the spider feed
   of the rest;
3. after the fetch, :meth:`DBShard.learn_robots` caches the robots.txt read, and
   :meth:`DBShard.settle` takes out the retries and records the hosts' health;
4. once the strategy workers have the spider log, :meth:`DBShard.complete` commits the batch in
   one WriteBatch: leases released, URLs done, retries queued, output rows staged.  A batch
   that failed instead goes through :meth:`DBShard.fail`.

Nothing in memory changes before the write it depends on succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.budget import Allowance
from raycrawl.coordinator.reports import DBWorkerReport
from raycrawl.db_worker.politeness import HostSlots, Wait
from raycrawl.db_worker.queue import TABLES as QUEUE_TABLES
from raycrawl.db_worker.queue import Entry, FrontierQueue
from raycrawl.db_worker.revisits import OVERDUE_S, RevisitPolicy, Visit
from raycrawl.db_worker.robots import TABLE as ROBOTS_TABLE
from raycrawl.db_worker.robots import RobotsCache, RobotsKind, RobotsPolicy, agent_token, origin_of
from raycrawl.errors import ErrorKind, retryable
from raycrawl.formats import schemas
from raycrawl.formats.schemas import ScoreUpdate, ended_rows
from raycrawl.output.shard import ShardOutput
from raycrawl.storage.assignment import ranges
from raycrawl.storage.moves import PartitionCopy, export_partition, ingest_partition
from raycrawl.storage.store import Store, part_key
from raycrawl.urls import partition_of

# Why a queued URL is not being fetched now (see DBShard.reasons)
REASONS = ("ready", "politeness", "host-backoff", "retry-after", "robots-retry", "host-busy",
           "retry-backoff", "parked", "depth-gate", "budget", "paused", "max-rate")
_COOKIES = b"k"  # k <partition> <host> -> the host's cookies (Set-Cookie lines, msgpack)
TABLES = QUEUE_TABLES + _COOKIES + ROBOTS_TABLE  # a DB worker's partitioned tables
CALLBACK_ERROR_SAMPLES = 5  # callback errors a DB worker reports (url: detail), the latest


def _kind(error: str | None) -> ErrorKind | None:
    return None if error is None else ErrorKind(error)


@dataclass(slots=True)
class _HostOutcome:
    """What a host's rows in a batch said so far (they may come in several parts)."""

    rowed: set[int] = dataclasses.field(default_factory=set)  # fingerprints with a row
    fetched: bool = False  # a request was sent
    healthy: bool = False  # one of them got a usable answer
    answered: bool = False  # one of them got an HTTP response
    # One failed as the host's fault: no answer, or an error status at a URL's first attempt
    # (a URL that failed before and answers an error again is its own fault, not its host's)
    host_failed: bool = False


@dataclass(frozen=True, slots=True)
class Triage:
    """A cut split in two: (entry, robots_needed) to fetch, (entry, kind) that end now."""

    fetch: list[tuple[Entry, bool]]
    ended: list[tuple[Entry, ErrorKind]]


@dataclass
class ShardCounters:
    """What the shard has done since it opened (reported, not durable)."""

    fetched: int = 0
    errors: int = 0
    retries: int = 0
    batches_cut: int = 0
    batches_done: int = 0
    batches_failed: int = 0
    robots_fetched: int = 0
    out_of_scope: int = 0  # links left out by the scope
    warc_records: int = 0  # rows committed with their WARC records
    revisits: int = 0  # rows committed for visits after a URL's first
    error_kinds: Counter[str] = dataclasses.field(default_factory=Counter)
    retry_causes: Counter[str] = dataclasses.field(default_factory=Counter)
    callback_errors: list[str] = dataclasses.field(default_factory=list)  # the latest few


class DBShard:
    """The queue and page metadata of one DB worker's partitions, in its RocksDB.

    Opening it recovers what an earlier incarnation left: batches it had leased go back to the
    queue with one more crash counted, except URLs in flight at ``fetch_retries`` deaths
    (poison), which end as ``quarantined`` — one atomic write per batch.  ``on_file_written``
    runs between an output file's rename and its recording (a crash point).
    """

    def __init__(self, config: CrawlConfig, index: int, owned: Collection[int] | None = None,
                 on_file_written: Callable[[], None] = lambda: None) -> None:
        self.config = config
        # The partitions this shard owns (None: all); keys of others in its store are left
        # alone (a move's copy not committed yet, or not dropped yet).
        self.owned = frozenset(range(config.partitions) if owned is None else owned)
        self.store = Store(os.path.join(config.state_dir, f"db-worker-{index}"),
                           sync=config.sync_writes, tables=TABLES)
        fences = self.store.fences()  # moving away: see fence
        self.fenced = frozenset(fences)
        self.frozen = frozenset(p for p, frozen in fences.items() if frozen)
        self.moved: Counter[str] = Counter()  # partitions moved in and out (this incarnation)
        self.queue = FrontierQueue(self.store, layered=config.max_depth is not None,
                                   revisits=config.recrawl_after_s is not None,
                                   owned=self.owned)
        self.revisits = RevisitPolicy(config)
        self.slots = HostSlots(config.delay_s, config.retry_backoff_s, config.max_backoff_s,
                               config.host_park_after, config.auto_throttle)
        self.robots = RobotsCache(self.store, config.partitions) if config.robots else None
        # A host parked because its robots.txt cannot be read is tried again, in a crawl that
        # revisits, once its URLs may be due again (None: it stays parked).
        self.revisit_park_s = config.revisit_floor_s
        self.agent = agent_token(config.user_agent)
        self.output = ShardOutput(self.store, config, index, on_file_written)
        self.output.repair_warc()  # the fetch workers of an earlier life are gone
        self.allowance = Allowance(self.store)  # used with max_pages only
        self.counters = ShardCounters()
        self._outcomes: dict[str, _HostOutcome] = {}  # hosts of batches still fetching
        # the last reasons counted: (their key, when, the counts)
        self._reasons: tuple[tuple[int | None, bool, bool, int], float,
                             dict[str, int]] | None = None
        self.failures: Counter[int] = Counter()  # fingerprint -> failed batches it was in
        for batch_id in self.queue.stale_leases():
            leased = self.queue.leased(batch_id)
            poison = [e for e in leased if e.crashes >= config.fetch_retries]
            back = [dataclasses.replace(e, crashes=e.crashes + 1) for e in leased
                    if e.crashes < config.fetch_retries]
            self.complete(batch_id, ended_rows([(e, ErrorKind.QUARANTINED) for e in poison]),
                          back)

    # -- queueing ---------------------------------------------------------------------------

    def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Queue the scheduled rows of a scoring-log batch; durable when this returns.  Rows
        with a ``skip`` kind (traps, host budget) end at once with that error.

        Idempotent: a URL enqueued here before is ignored, unless the row sets a due time (a
        strategy's ``at``): then that is its next visit's.  Returns how many were queued."""
        rows = ScoreUpdate.from_batch(scoring.filter(scoring.column("schedule")))
        entries, ended = [], []
        changed = {(r.partition, r.fingerprint): r.modified_at for r in rows
                   if r.modified_at is not None}
        for r in rows:
            entry = Entry(r.url, r.fingerprint, r.host, r.partition, r.depth, r.score, 0,
                          r.redirect_chain, not_before=r.not_before or 0.0,
                          callback=r.callback, meta=r.meta, method=r.method, headers=r.headers,
                          body=r.body, interval_s=r.interval_s, hops=r.hops or 0,
                          render=r.render)
            if r.skip is None:
                entries.append(entry)
            else:
                ended.append((entry, ErrorKind(r.skip)))
        if ended:
            self.complete(0, ended_rows(ended))
        queued = self.queue.push(entries)
        if changed:
            self.queue.changed(changed)
        return queued

    def wanted(self, gate: int | None) -> int:
        """URLs the next cut may take (before the allowance): a batch, or what is queued."""
        queued = self.queue.queued if gate is None else self.queue.queued_up_to(gate)
        return min(self.config.batch_size, queued)

    @property
    def held(self) -> int:
        """URLs done or leased: the page budget this worker uses."""
        return self.queue.done_total + self.queue.leased_total

    def grow_allowance(self, amount: int, grant: str) -> int:
        return self.allowance.grow(amount, grant)

    def shrink_allowance(self, to: int) -> int:
        return self.allowance.shrink(to, self.held)

    def cut(self, max_urls: int, gate: int | None) -> tuple[int, list[Entry]]:
        """Lease up to ``max_urls`` URLs of hosts that are free, within the allowance;
        (batch id, entries)."""
        if self.config.max_pages is not None:
            max_urls = min(max_urls, self.allowance.value - self.held)
        if self.queue.not_due:
            self.queue.promote(time.time())
        batch_id, entries = self.queue.cut(max_urls, self.config.host_batch_cap, self.slots,
                                           gate, skip=self.fenced)
        if entries:
            self.counters.batches_cut += 1
        return batch_id, entries

    # -- one batch --------------------------------------------------------------------------

    def triage(self, entries: list[Entry]) -> Triage:
        """Split a cut into the URLs to fetch (with whether their robots.txt must be read
        first) and those that end now: URLs of parked hosts and URLs the origin's cached
        robots.txt disallows."""
        fetch: list[tuple[Entry, bool]] = []
        ended: list[tuple[Entry, ErrorKind]] = []
        now = time.monotonic()
        for e in entries:
            parked = self.slots.park_reason(e.host, now)
            if parked is not None:
                ended.append((e, parked))
                continue
            needed = False
            if self.robots is not None:
                policy = self.robots.get(origin_of(e.url))
                if policy is None or policy.kind is RobotsKind.UNAVAILABLE:
                    needed = True
                elif not policy.allows(e.url, self.agent):
                    ended.append((e, ErrorKind.ROBOTS))
                    continue
                else:
                    self.slots.crawl_delay[e.host] = policy.crawl_delay_s(self.agent)
            fetch.append((e, needed))
        return Triage(fetch, ended)

    def feed(self, fetch: list[tuple[Entry, bool]]) -> pa.RecordBatch:
        """The spider feed of the URLs to fetch, with each host's current delay (and its
        cookies, when the crawl keeps them)."""
        entries = [e for e, _ in fetch]
        cookies = None
        if self.config.cookies:
            hosts = list({e.host: e.partition for e in entries}.items())
            jars = dict(zip([h for h, _ in hosts], self.store.multi_get(
                [part_key(_COOKIES, p) + h.encode() for h, p in hosts])))
            cookies = [jars[e.host] for e in entries]
        return schemas.feed_rows(entries, [self.slots.delay(e.host) for e in entries],
                                 [needed for _, needed in fetch], cookies)

    def learn_cookies(self, cookies: pa.RecordBatch) -> None:
        """Keep the cookies the hosts of a fetched batch hold now (before the hosts are
        released: the next batch of a host sends them)."""
        if not self.config.cookies or cookies.num_rows == 0:
            return
        wb = self.store.batch()
        for host, raw in zip(cookies.column("host").to_pylist(),
                             cookies.column("cookies").to_pylist()):
            wb.put(part_key(_COOKIES, partition_of(host, self.config.partitions)) + host.encode(),
                   raw)
        self.store.write(wb, sync=False)  # lost with the machine: the host sets them again

    def learn_robots(self, robots: pa.RecordBatch) -> Counter[str]:
        """Cache the robots.txt fetches.  An unreachable one pushes its host back until the
        next try (``robots_retry_s``, doubling); once that would be ``robots_give_up_s`` after
        the first failure, the host is parked: its queued URLs end as ``robots-unavailable``
        (in a revisiting crawl, until its URLs' next visit, which tries robots.txt again).
        Returns the fetches by outcome (``RobotsKind``'s words)."""
        outcomes: Counter[str] = Counter()
        if self.robots is None:
            return outcomes
        now_wall, now = time.time(), time.monotonic()
        cfg = self.config
        for row in robots.to_pylist():
            origin, host = row["origin"], row["host"]
            policy = RobotsPolicy.from_fetch(row["status"], row["body"] or b"", now_wall,
                                             cfg.robots_ttl_s, cfg.robots_retry_s,
                                             self.robots.stored(origin))
            self.counters.robots_fetched += 1
            outcomes[policy.kind.value] += 1
            self.slots.crawl_delay[host] = policy.crawl_delay_s(self.agent)
            if policy.gave_up(cfg.robots_give_up_s):
                # The next try after the park starts a new round.
                policy = dataclasses.replace(policy, failures=0, failing_since=0.0)
                self.slots.park(host, ErrorKind.ROBOTS_UNAVAILABLE,
                                None if self.revisit_park_s is None
                                else now + self.revisit_park_s)
            elif policy.kind is RobotsKind.UNAVAILABLE:
                self.slots.push_back(host, now + (policy.expires_at - now_wall), Wait.ROBOTS)
            self.robots.put(origin, policy)
        return outcomes

    def settle(self, pages: pa.RecordBatch, entries: Sequence[Entry],
               ended: Collection[str] | None = None) -> tuple[pa.RecordBatch, list[Entry]]:
        """Take out the rows that get another attempt, each after its own exponential backoff
        (its host's other URLs go on); a Retry-After pushes the whole host back.  A host whose
        every request failed to connect or timed out counts a failure (see
        ``HostSlots.record_outcome``); one that answered, even 5xx, is up.

        A host's rows may come in several calls (a slow page's siblings first): ``entries``
        holds the entries of the rows and of the hosts in ``ended`` (None: every host of
        ``entries``), whose fetch is over.  An ended host's health is recorded over all its
        calls, and its URLs that got no row were not requested (their host sent a Retry-After,
        or its robots.txt could not be read): they go back as they were, behind the host's
        pause.  A host that answered only 429/5xx is backed off too (never parked: it answers),
        unless each of them was a retry: a URL that fails again with an answer is its own
        fault, and waits its own backoff (a host's health is not told by its bad pages).

        Returns (the rows that stand, the entries to queue again)."""
        cfg = self.config
        by_fp = {e.fingerprint: e for e in entries}
        now = time.monotonic()
        keep, retry = [], []
        rows = pages.select(["fingerprint", "host", "status", "error", "retry_after_s",
                             "duration_s"])
        for i, (fp, host, status, error, after, took) in enumerate(
                zip(*rows.to_pydict().values())):
            outcome = self._outcomes.setdefault(host, _HostOutcome())
            outcome.rowed.add(fp)
            kind = _kind(error)
            failed = retryable(kind, status)
            entry = by_fp.get(fp)
            if kind is None or kind.fetched:
                self.slots.observe(host, took, not failed and status is not None)
                outcome.fetched = True
                outcome.healthy = outcome.healthy or not failed
                outcome.answered = outcome.answered or status is not None
                outcome.host_failed = outcome.host_failed or failed and (
                    status is None or entry is None or not entry.attempts)
            if after is not None:
                self.slots.push_back(host, now + min(after, cfg.max_retry_after_s),
                                     Wait.RETRY_AFTER)
            if failed and entry is not None and entry.attempts < cfg.retries:
                backoff = cfg.retry_backoff_s * 2 ** entry.attempts
                retry.append(dataclasses.replace(entry, attempts=entry.attempts + 1,
                                                 not_before=time.time() + backoff))
                self.counters.retry_causes[str(kind or status)] += 1
            else:
                keep.append(i)
        if ended is None:
            ended = {e.host for e in entries} | set(rows.column("host").to_pylist())
        for host in ended:
            outcome = self._outcomes.pop(host, _HostOutcome())
            retry += [e for e in entries if e.host == host and e.fingerprint not in outcome.rowed]
            if outcome.fetched and (outcome.healthy or outcome.host_failed):
                self.slots.record_outcome(host, outcome.healthy, now, park=not outcome.answered)
        self.counters.retries += len(retry)
        if len(keep) < pages.num_rows:
            pages = pages.take(pa.array(keep, type=pa.int64()))
        return pages, retry

    def release_hosts(self, hosts: Iterable[str]) -> None:
        """These hosts' fetch is over: their delay runs from now, another batch may take
        them."""
        hosts = set(hosts)
        for host in hosts:
            self._outcomes.pop(host, None)
        self.slots.release(hosts, time.monotonic())

    def complete(self, batch_id: int, pages: pa.RecordBatch,
                 retry: Sequence[Entry] = (), items: pa.RecordBatch | None = None,
                 entries: Sequence[Entry] = ()) -> pa.RecordBatch:
        """Commit a batch in one atomic write: release its leases, queue its retries, put
        the next visits of its ``entries`` that are revisited in the time index, and stage
        each URL's output row and its spider items once per visit (a visit completed before
        gets no second row, and its items are not written again).  Durable when this returns;
        counters change only after the write.  Returns the rows committed now."""
        wb = self.store.batch()
        keys = list(zip(pages.column("partition").to_pylist(),
                        pages.column("fingerprint").to_pylist()))
        visits = pages.column("visit").to_pylist()
        completion = self.queue.complete(wb, batch_id, keys, list(retry), visits,
                                         self._next_visits(pages, entries))
        rows = pages
        fresh = pa.array([fp for _, fp in completion.fresh], type=pa.uint64())
        if len(completion.fresh) < pages.num_rows:
            rows = pages.filter(pc.is_in(pages.column("fingerprint"), value_set=fresh))
        staged = self.output.stage(wb, rows, fresh, items)
        self.store.write(wb)
        self.queue.apply(completion)
        self.output.apply(staged)
        errors = rows.column("error").drop_null().to_pylist()
        self.counters.fetched += rows.num_rows
        self.counters.errors += len(errors)
        self.counters.error_kinds.update(errors)
        self.counters.out_of_scope += pc.sum(rows.column("out_of_scope")).as_py() or 0
        self.counters.warc_records += rows.num_rows - rows.column("warc_file").null_count
        self.counters.revisits += pc.sum(pc.greater(rows.column("visit"), 1)).as_py() or 0
        if ErrorKind.CALLBACK_ERROR in errors:
            failed = rows.filter(pc.equal(rows.column("error"), ErrorKind.CALLBACK_ERROR.value))
            for url, detail in zip(failed.column("url").to_pylist(),
                                   failed.column("error_detail").to_pylist()):
                self.counters.callback_errors.append(f"{url}: {detail}")
            del self.counters.callback_errors[:-CALLBACK_ERROR_SAMPLES]
        self.output.flush_if_due()
        return rows

    def _next_visits(self, pages: pa.RecordBatch, entries: Sequence[Entry]
                     ) -> dict[tuple[int, int], Entry]:
        """(partition, fingerprint) -> the entry of its next visit, for the pages whose URL
        is revisited (a strategy's ``at`` for it wins over its interval)."""
        if not entries or pages.num_rows == 0 or (
                self.revisits.after_s is None and not self.queue.has_overrides
                and all(e.interval_s is None for e in entries)):  # fetched once, all of them
            return {}
        by_fp = {e.fingerprint: e for e in entries}
        cols = pages.select(["fingerprint", "status", "error", "fetched_at", "changed", "etag",
                             "last_modified", "digest"]).to_pydict()
        overrides = self.queue.overrides([(by_fp[fp].partition, fp)
                                           for fp in cols["fingerprint"] if fp in by_fp])
        nexts: dict[tuple[int, int], Entry] = {}
        for fp, status, error, at, changed, etag, modified, digest in zip(*cols.values()):
            entry = by_fp.get(fp)
            if entry is None:
                continue
            key = (entry.partition, fp)
            nxt = self.revisits.next_visit(entry, Visit(status, error, at, bool(changed), etag,
                                                        modified, digest), overrides.get(key))
            if nxt is not None:
                nexts[key] = nxt
        return nexts

    def requeue(self, batch_id: int, entries: Sequence[Entry]) -> None:
        """Queue again, while their batch goes on, the entries its hosts' ended parts give
        back (a retry, a URL whose robots.txt could not be read): they wait for their own
        backoff or their host's, not for the batch's slowest host.  Durable on return."""
        if entries:
            wb = self.store.batch()
            completion = self.queue.requeue(wb, batch_id, entries)
            self.store.write(wb)
            self.queue.apply(completion)

    def finish_batch(self) -> None:
        """A batch is over (completed, failed or given back): counted in the activity."""
        self.counters.batches_done += 1

    def give_back(self, batch_id: int, entries: list[Entry]) -> None:
        """A batch stopped by an infrastructure fault (a peer that died or did not answer):
        its URLs go back to the queue as they were, nothing counted against them."""
        self.complete(batch_id, schemas.FetchOutcome.empty(), entries)

    def fail(self, batch_id: int, entries: list[Entry]) -> None:
        """A batch failed in raycrawl itself (a bug, a peer that kept failing): its URLs go
        back to the queue, and those in ``fetch_retries`` + 1 failed batches end as
        ``internal-error`` instead of looping — in one atomic write."""
        self.counters.batches_failed += 1
        given_up: list[Entry] = []
        back: list[Entry] = []
        for e in entries:
            self.failures[e.fingerprint] += 1
            (given_up if self.failures[e.fingerprint] > self.config.fetch_retries
             else back).append(e)
        self.complete(batch_id, ended_rows([(e, ErrorKind.INTERNAL_ERROR) for e in given_up]),
                      back)

    # -- partitions moving (see raycrawl.storage.moves) -------------------------------------

    @property
    def accepting(self) -> frozenset[int]:
        """The partitions whose rows this shard takes: owned and not frozen."""
        return self.owned - self.frozen

    def fence(self, partitions: Collection[int]) -> int:
        """Fence ``partitions`` (durably): no cut takes their URLs any more (rows of them are
        still queued, until the copy freezes them).  Returns how many of their URLs are still
        leased (their batches in flight): the move waits for none."""
        new = [p for p in partitions if p not in self.fenced]
        if new:
            self.store.fence(new)
            self.fenced = self.fenced | frozenset(new)
            self._reasons = None
        wanted = set(partitions)
        return sum(1 for e in self.queue.leases() if e.partition in wanted)

    def _hosts_of(self, partition: int) -> set[str]:
        """The hosts of ``partition`` this shard keeps anything of in memory."""
        slots = self.slots
        known = {*slots.ready_at, *slots.crawl_delay, *slots.auto_delay, *slots.failures,
                 *slots.parked}
        return {h for h in known if partition_of(h, self.config.partitions) == partition}

    def export_partition(self, partition: int) -> PartitionCopy:
        """A copy of fenced ``partition``'s state (its keys, its hosts' politeness), taken
        once none of its URLs is leased."""
        if partition not in self.fenced or self.fence([partition]):
            raise ValueError(f"partition {partition} is exported before it was fenced and "
                             f"its batches ended")
        if partition not in self.frozen:  # from now on its rows are refused (sent again)
            self.store.fence([partition], frozen=True)
            self.frozen = self.frozen | {partition}
        hosts = self._hosts_of(partition)
        return export_partition(self.store, partition, self.queue.next_seq,
                                {"hosts": self.slots.export(hosts, time.monotonic())})

    def adopt_partition(self, copy: PartitionCopy) -> None:
        """Hold ``copy``'s state (replacing whatever this shard held of it), not yet owned:
        its keys stay inert until :meth:`take` (the move's commit point names this worker)."""
        if copy.partition in self.owned:
            raise ValueError(f"partition {copy.partition} is adopted by its owner")
        ingest_partition(self.store, copy)
        self.queue.reserve(copy.next_seq)
        self.slots.adopt(copy.memory.get("hosts", {}), time.monotonic())

    def take(self, partitions: Collection[int]) -> None:
        """Own ``partitions`` from now on (the assignment names this worker): their queued
        URLs are counted and cut."""
        for p in sorted(set(partitions) - self.owned):
            self.queue.adopt(p)
            self.owned = self.owned | {p}
            self.moved["in"] += 1
        self._reasons = None

    def drop_partition(self, partition: int) -> None:
        """Forget ``partition`` and delete its keys (it moved to another worker)."""
        if partition in self.owned:
            self.queue.forget(partition)
            self.moved["out"] += 1
        self.slots.forget(self._hosts_of(partition))
        self.store.drop(partition)
        if self.robots is not None:
            self.robots.forget(partition)
        self.owned = self.owned - {partition}
        self.fenced, self.frozen = self.fenced - {partition}, self.frozen - {partition}
        self._reasons = None

    def reasons(self, gate: int | None, fetching: bool,
                rate_limited: bool = False) -> dict[str, int]:
        """Why each queued URL is not being fetched now, counted (every queued URL once):

        =================  ==============================================================
        ``ready``          nothing holds it: the next cut may take it
        ``politeness``     its host waits its delay (or Crawl-delay) since its last request
        ``host-backoff``   its host failed and is backed off
        ``retry-after``    its host asked for a pause (429/503 Retry-After)
        ``robots-retry``   its host's robots.txt could not be read: tried again soon
        ``host-busy``      its host is being fetched by a batch (``per_host``)
        ``retry-backoff``  it failed and waits its own backoff before the next attempt
        ``parked``         its host is parked: it ends at the next cut
        ``depth-gate``     it is deeper than the depth being crawled (``--max-depth``)
        ``budget``         the crawl's ``max_pages`` is held by URLs done or in flight
        ``paused``         this worker cuts no batch (paused, or no fetch worker yet)
        ``max-rate``       this worker's part of the crawl's ``--max-rate`` is used up
        =================  ==============================================================

        The first seven and ``max-rate`` end at a time of their own, ``paused`` when the
        crawl resumes or gets CPUs; ``ready``, ``parked``, ``depth-gate`` and ``budget`` with
        nothing in flight for long mean the crawl is stalled (see ``CrawlControl``).  Read at
        most once a second (it visits every host with queued URLs)."""
        now, wall = time.monotonic(), time.time()
        key = (gate, fetching, rate_limited, self.queue.queued)  # (they add up to queued)
        if self._reasons is not None and self._reasons[0] == key and now - self._reasons[1] < 1.0:
            return self._reasons[2]
        reasons: Counter[str] = Counter()
        for host, queued in self.queue.hosts.items():
            if self.slots.park_reason(host, now) is not None:
                reasons["parked"] += queued.queued
            elif host in self.slots.leased:
                reasons["host-busy"] += queued.queued
            elif (why := self.slots.wait_reason(host, now)) is not None:
                reasons[why.value] += queued.queued
            else:
                later = queued.not_yet(wall)
                reasons["retry-backoff"] += later
                reasons["ready"] += queued.queued - later
        ready = reasons.pop("ready", 0)
        if gate is not None:
            deeper = min(ready, self.queue.queued - self.queue.queued_up_to(gate))
            reasons["depth-gate"] += deeper
            ready -= deeper
        if self.config.max_pages is not None and self.allowance.value <= self.held:
            reasons["budget"] += ready
        elif not fetching:
            reasons["paused"] += ready
        elif rate_limited:
            reasons["max-rate"] += ready
        else:
            reasons["ready"] += ready
        counted = {k: n for k, n in reasons.items() if n}
        self._reasons = (key, now, counted)
        return counted

    def report(self, running: bool, in_flight: int, gate: int | None, loop_errors: int,
               timers: dict[str, float], storage_error: str = "",
               fetch_faults: int = 0, fetch_quota: int | None = None,
               rate_limited: bool = False) -> DBWorkerReport:
        c, q = self.counters, self.queue
        return DBWorkerReport(
            queued=q.queued, queued_at_gate=q.queued if gate is None else q.queued_up_to(gate),
            in_flight=in_flight, leased_urls=q.leased_total, done_total=q.done_total,
            running=running, activity=q.enqueued_total + c.batches_cut + c.batches_done,
            fetched=c.fetched, errors=c.errors, retries=c.retries, loop_errors=loop_errors,
            batches_failed=c.batches_failed, fetch_faults=fetch_faults,
            robots_fetched=c.robots_fetched, parked_hosts=len(self.slots.parked),
            rows_written=self.output.rows_written, fetch_s=round(timers["fetch_s"], 2),
            hand_over_s=round(timers["hand_over_s"], 2), error_kinds=dict(c.error_kinds),
            retry_causes=dict(c.retry_causes), storage_error=storage_error,
            allowance=self.allowance.value, held=self.held,
            items_total=self.output.items_total, items_written=self.output.items_written,
            out_of_scope=c.out_of_scope, callback_errors=tuple(c.callback_errors),
            warc_records=c.warc_records, not_due=q.not_due, due=sum(q.due.values()),
            queued_by_reason=self.reasons(gate, running and fetch_quota != 0, rate_limited),
            overdue=q.overdue(time.time(), OVERDUE_S), revisits=c.revisits,
            partitions=ranges(self.owned), partitions_owned=len(self.owned),
            moved_in=self.moved["in"], moved_out=self.moved["out"])

    def flush(self) -> None:
        """Write buffered output rows (and items) to files now."""
        self.output.flush()

    def close(self) -> None:
        self.queue.close()  # its counts, for a fast open
        self.store.close()
