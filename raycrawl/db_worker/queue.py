"""The DB worker's queue: scheduled URLs in RocksDB, cut into polite spider-feed batches.

Keys (``P``: the URL's partition, 2 bytes; see ``raycrawl.storage.store``)::

    q <P> <layer:u16> <-score:sortable f64> <seq:u64> -> queued entry (msgpack)
    f <P> <fingerprint:u64>                           -> b"" once a URL was ever enqueued here
    p <P> <fingerprint:u64>                           -> the last visit whose page row was
                                                         output (u32; b"" for visit 1)
    d <P> <due:u64 ms> <seq:u64>                      -> an entry waiting for its due time
    v <P> <fingerprint:u64>                           -> its ``d`` key
    n <P> <fingerprint:u64>                           -> a due time (f64) a strategy set for a
                                                         URL in flight: its next visit's
    l <batch:u64> <seq:u64>                           -> an entry leased to an in-flight batch
    c                                                 -> counters (next seq, next batch id,
                                                         URLs done)
    \x00counts                                        -> the counts kept in memory, written
                                                         at a clean close, deleted on open

The first six tables are the partitions' (they move with them); leases and counters are the
worker's own.  ``layer`` is the URL's depth when the crawl advances depth by depth
(``--max-depth``), else 0, so a cut can stop at the current depth gate.

Each partition is a queue of its own, in (layer, score, arrival) order; a cut merges the
partitions' queues by (layer, score) — higher scores first, as one queue would — and takes
the partitions tied on those in turn, starting one further each cut, so none waits on
another's backlog.

Revisits (and URLs a strategy schedules for later) wait in the time index ``d``; once due,
:meth:`FrontierQueue.promote` moves them into ``q``, where they take their turn by score.  A
cut therefore never reads an entry that is not due, and a URL has one entry at any time (in
``q``, ``d`` or ``l``): the store grows with URLs, not with visits.
"""

from __future__ import annotations

import dataclasses
import heapq
import struct
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from raycrawl.db_worker.politeness import HostSlots
from raycrawl.formats.entry import ATTEMPTS, FINGERPRINT, HOST, NOT_BEFORE, VISIT, Entry
from raycrawl.storage.store import Store, WriteBatch, part_key, read_u64, sortable_float, u64

_Q, _F, _L, _P, _C, _D, _W, _O = b"q", b"f", b"l", b"p", b"c", b"d", b"v", b"n"
TABLES = _Q + _F + _P + _D + _W + _O  # the partitioned tables (see raycrawl.storage.store)
_DUE = struct.Struct(">d")
COUNTS_KEY = b"\x00counts"  # the counts at a clean close (see FrontierQueue.close)
_COUNTS_VERSION = 1
PROMOTE_LIMIT = 10_000  # entries one promote moves at most (the next cut moves the rest)

Key = tuple[int, int]  # (partition, fingerprint): where a URL's keys are
Layers = Counter[tuple[int, int]]  # queued entries by (partition, layer)


def due_key_ms(due: float) -> bytes:
    return u64(max(0, int(due * 1000)))


def _url_key(table: bytes, key: Key) -> bytes:
    return part_key(table, key[0]) + u64(key[1])


def _key_of(entry: Entry) -> Key:
    return entry.partition, entry.fingerprint


def _visit_bytes(visit: int) -> bytes:
    return b"" if visit == 1 else visit.to_bytes(4, "big")


def _stored_visit(raw: bytes | None) -> int:
    """The last visit whose row was output (0: none)."""
    if raw is None:
        return 0
    return int.from_bytes(raw, "big") if raw else 1


@dataclass(slots=True)
class HostQueue:
    """A host's queued URLs: how many, and of those the ones with a time before which they
    are not fetched (a retry's backoff, a revisit's due time), by second (wall clock)."""

    partition: int
    queued: int = 0
    later: Counter[int] = field(default_factory=Counter)

    def not_yet(self, now: float) -> int:
        """Its URLs not to be fetched before a time still to come (counted by the second, so
        one may be counted up to a second after it came); forgets the times gone."""
        gone = [second for second in self.later if second + 1 <= now]
        for second in gone:
            del self.later[second]
        return sum(self.later.values())


@dataclass(frozen=True, slots=True)
class Completion:
    """A batch's completion added to a WriteBatch, to :meth:`FrontierQueue.apply` once it is
    written: the URLs done for the first time, the retries queued per partition and layer."""

    fresh: list[Key]
    layers: Layers = field(default_factory=Counter)
    queued: tuple[Entry, ...] = ()  # retries queued again
    released: int = 0  # leases dropped
    not_due: Counter[int] = field(default_factory=Counter)  # next visits put in the time index
    due: Counter[int] = field(default_factory=Counter)  # revisits queued, by due second


class _Cut:
    """What one cut took and where it stopped, partition by partition."""

    def __init__(self, max_urls: int, scan_limit: int, host_cap: int, hosts: int) -> None:
        self.max_urls, self.scan_limit, self.host_cap, self.hosts = (
            max_urls, scan_limit, host_cap, hosts)
        self.scanned = 0
        self.per_host: dict[str, int] = {}
        # A host's cap where its delay allows fewer than host_cap (HostSlots.batch_cap); at
        # most half of its cap of retried URLs a batch (see FrontierQueue.cut)
        self.caps: dict[str, int] = {}
        self.retried: dict[str, int] = {}
        self.blocked: set[str] = set()
        self.full = 0  # hosts at their cap
        self.taken: list[tuple[bytes, Entry]] = []
        self.first_left: dict[int, bytes] = {}  # per partition: the first key seen, not taken
        self.left: dict[int, bytes] = {}  # per partition read: its next key, not read
        self.last_taken: dict[int, bytes] = {}
        self.part_busy: Counter[int] = Counter()  # per partition: hosts blocked or full

    def over(self) -> bool:
        """The cut is done: enough taken or scanned, or every host is busy or full."""
        return (self.scanned >= self.scan_limit or len(self.taken) >= self.max_urls
                or len(self.blocked) + self.full >= self.hosts)


class _Counted(NamedTuple):
    """What the counts kept in memory need of a queued entry (read without making one)."""

    host: str
    partition: int
    not_before: float
    visit: int


_CHUNK = 10_000  # entries counted at a time when a queue's counts are rebuilt


class FrontierQueue:
    """Durable queue of one DB worker's partitions; every mutation is one atomic WriteBatch."""

    def __init__(self, store: Store, layered: bool, revisits: bool = False,
                 owned: Collection[int] | None = None) -> None:
        self.store = store
        self.layered = layered
        # Partitions whose entries are counted and cut (None: all); keys of others are left
        # alone (see DBShard.owned).
        self.owned = None if owned is None else set(owned)
        raw = store.get(_C)
        counters: tuple[int, int, int] = tuple(msgpack.unpackb(raw)) if raw else (0, 1, 0)
        self.next_seq, self.next_batch, self.done_total = counters
        self.track_due = revisits
        self.by_layer: Counter[int] = Counter()
        self.by_part: Counter[int] = Counter()  # queued URLs per partition
        self.not_due = 0  # URLs waiting in the time index
        self.not_due_by: Counter[int] = Counter()  # the same per partition
        self.due_next: dict[int, int] = {}  # per partition: its first waiting entry's due (ms)
        # Revisits due and queued, by due second (for ``overdue``).
        self.due: Counter[int] = Counter()
        # Queued entries by host, and of those the ones not to be fetched before a time (a
        # retry's backoff), by second: why URLs wait (see DBShard.reasons).
        self.hosts: dict[str, HostQueue] = {}
        self.part_hosts: dict[int, set[str]] = {}
        # Per partition, no queued key sorts below ``head[p]``: a cut seeks there instead of
        # to the partition's first key, past the deletions of entries leased earlier (RocksDB
        # keeps them as tombstones until compaction, and an iterator walks every one).  Cuts
        # move it up, any put of a smaller key moves it down.  ``due_head`` does the same for
        # the time index.
        self.head: dict[int, bytes] = {}
        self.head_band: dict[int, bytes] = {}  # a lower bound of its first key's band
        self.due_head: dict[int, bytes] = {}
        self.has_overrides = False
        self.rotation = 0  # which of the partitions tied in a cut goes first
        if not self._restore_counts():
            self._recount(_Q, _D, _O)
        self.leased_total = sum(1 for _ in store.scan(_L, _L + b"\xff"))  # URLs under lease
        self.enqueued_total = 0

    def _recount(self, q_start: bytes, d_start: bytes, o_start: bytes,
                 sign: int = 1) -> None:
        """Count the queued and waiting entries from ``q_start``/``d_start`` to the end of
        their partition's range (every partition's, from the table's letter alone) in or
        (``sign`` -1) out of the counts kept in memory."""
        waiting: Counter[int] = Counter()
        owned = self.owned
        for key, _ in self.store.scan(d_start, _stop(d_start)):
            part = int.from_bytes(key[1:3], "big")
            if owned is not None and part not in owned:
                continue
            waiting[part] += 1
            if sign > 0 and part not in self.due_next:
                self.due_next[part] = read_u64(key, 3)
        self._count_waiting(waiting, sign)
        if sign < 0:
            for part in waiting:
                self.due_next.pop(part, None)
                self.due_head.pop(part, None)
        layers: Layers = Counter()
        count = self._count_in if sign > 0 else self._count_out
        track_due = self.track_due or self.not_due > 0 or bool(waiting)
        due: Counter[int] = Counter()
        chunk: list[_Counted] = []
        # Only what the counts need of each entry, a chunk at a time: an Entry per queued URL,
        # all held at once, took 60 s and 4.8 GB to open a 10M-URL store.
        for key, raw_entry in self.store.scan(q_start, _stop(q_start)):
            part = int.from_bytes(key[1:3], "big")
            if owned is not None and part not in owned:
                continue
            layers[part, int.from_bytes(key[3:5], "big")] += 1
            fields = msgpack.unpackb(raw_entry)
            chunk.append(_Counted(fields[HOST], part, fields[NOT_BEFORE],
                                  (fields[VISIT] if len(fields) > VISIT else None) or 1))
            if len(chunk) >= _CHUNK:
                count(chunk)
                if track_due:
                    due.update(self._due_seconds(chunk))
                chunk.clear()
        count(chunk)
        if track_due:
            due.update(self._due_seconds(chunk))
        self._add_layers(layers, sign)
        if track_due:
            self.due.update({s: sign * n for s, n in due.items()})
            self.due = +self.due
        self.has_overrides = self.has_overrides or next(
            self.store.scan(o_start, _stop(o_start)), None) is not None

    def close(self) -> None:
        """Keep the counts held in memory in the store, for the next open to read instead of
        counting every queued entry again (about 3 µs a queued URL: 30 s at 10M).  Call it
        last, with nothing written after it: the open that reads them deletes them first."""
        hosts = [(h, q.partition, q.queued, list(q.later.items())) for h, q in self.hosts.items()]
        wb = self.store.batch()
        wb.put(COUNTS_KEY, msgpack.packb((
            _COUNTS_VERSION, self._identity(), hosts, list(self.by_layer.items()),
            list(self.by_part.items()), list(self.not_due_by.items()),
            list(self.due_next.items()), list(self.due.items()), self.has_overrides)))
        self.store.write(wb, sync=True)

    def _identity(self) -> tuple[list[int] | None, bool]:
        """What counts depend on besides the keys: the partitions counted, revisits on."""
        return None if self.owned is None else sorted(self.owned), self.track_due

    def _restore_counts(self) -> bool:
        """Read the counts a clean close kept (see :meth:`close`); False: there are none, or
        they were kept for other partitions or another mode (count the keys then).  They are
        deleted first, durably: a write after this open makes them stale, and a crash before
        the next clean close must count the keys again."""
        raw = self.store.get(COUNTS_KEY)
        if raw is None:
            return False
        wb = self.store.batch()
        wb.delete(COUNTS_KEY)
        self.store.write(wb, sync=True)  # before anything else is written
        (version, identity, hosts, by_layer, by_part, not_due_by, due_next, due,
         overrides) = msgpack.unpackb(raw, strict_map_key=False)
        if version != _COUNTS_VERSION or tuple(identity) != self._identity():
            return False
        for host, part, queued, later in hosts:
            self.hosts[host] = HostQueue(part, queued, Counter(dict(later)))
            self.part_hosts.setdefault(part, set()).add(host)
        self.by_layer, self.by_part = Counter(dict(by_layer)), Counter(dict(by_part))
        self.not_due_by = Counter(dict(not_due_by))
        self.not_due = sum(self.not_due_by.values())
        self.due_next, self.due = dict(due_next), Counter(dict(due))
        self.has_overrides = overrides
        return True

    def _add_layers(self, layers: Layers, sign: int = 1) -> None:
        for (part, layer), n in layers.items():
            self.by_layer[layer] += sign * n
            self.by_part[part] += sign * n
        if sign < 0:
            self.by_layer, self.by_part = +self.by_layer, +self.by_part

    def _counters(self, done_delta: int = 0) -> bytes:
        return msgpack.packb((self.next_seq, self.next_batch, self.done_total + done_delta))

    @property
    def queued(self) -> int:
        return sum(self.by_layer.values())

    def queued_up_to(self, layer: int) -> int:
        return sum(n for d, n in self.by_layer.items() if d <= layer)

    def _key(self, entry: Entry, seq: int) -> tuple[bytes, int]:
        layer = min(entry.depth, 0xFFFF) if self.layered else 0
        return (part_key(_Q, entry.partition) + layer.to_bytes(2, "big")
                + sortable_float(-entry.score) + u64(seq), layer)

    def push(self, entries: list[Entry]) -> int:
        """Queue the entries not enqueued here before; durable on return. Returns how many."""
        if not entries:
            return 0
        unique = list({_key_of(e): e for e in entries}.values())
        known = self.store.multi_get([_url_key(_F, _key_of(e)) for e in unique])
        fresh = [e for e, k in zip(unique, known) if k is None]
        again = {_key_of(e): e.not_before for e, k in zip(unique, known)
                 if k is not None and e.not_before}
        if again:  # a strategy's ``at`` for a URL fetched before: its next visit
            self.reschedule(again)
        if not fresh:
            return 0
        wb = self.store.batch()
        for entry in fresh:
            wb.put(_url_key(_F, _key_of(entry)), b"")
        now = time.time()
        later = [e for e in fresh if e.not_before > now]  # a strategy's ``at``
        for entry in later:
            self._put_waiting(wb, entry)
        queued = [e for e in fresh if e.not_before <= now] if later else fresh
        layers = self._put_entries(wb, queued)
        self.store.write(wb)
        self._add_layers(layers)
        self._count_in(queued)
        self._count_waiting(Counter(e.partition for e in later))
        self.enqueued_total += len(fresh)
        return len(fresh)

    # -- the time index ----------------------------------------------------------------------

    def _put_waiting(self, wb: WriteBatch, entry: Entry) -> None:
        """Add to ``wb`` an entry that waits until its ``not_before`` (count it once written)."""
        part = entry.partition
        due = due_key_ms(entry.not_before)
        key = part_key(_D, part) + due + u64(self.next_seq)
        self.next_seq += 1
        head = self.due_head.get(part)  # (none: the partition's first key)
        if head is not None and key < head:
            self.due_head[part] = key
        # (early if the write fails: a promote then finds nothing due)
        self.due_next[part] = min(self.due_next.get(part, 1 << 63), read_u64(due))
        wb.put(key, entry.pack())
        wb.put(_url_key(_W, _key_of(entry)), key)

    def _count_waiting(self, parts: Counter[int], sign: int = 1) -> None:
        for part, n in parts.items():
            self.not_due_by[part] += sign * n
            self.not_due += sign * n
        if sign < 0:
            self.not_due_by = +self.not_due_by

    def promote(self, now: float, limit: int = PROMOTE_LIMIT) -> int:
        """Move the entries due by ``now`` (wall clock) from the time index into the queue,
        at most ``limit``, in one atomic write; returns how many."""
        now_ms = read_u64(due_key_ms(now))
        moved: list[tuple[bytes, Entry]] = []
        heads: dict[int, bytes] = {}
        nexts: dict[int, int | None] = {}
        for part in [p for p, due in self.due_next.items() if due <= now_ms]:
            start = self.due_head.get(part, part_key(_D, part))
            nexts[part] = None
            for key, raw in self.store.scan(start, part_key(_D, part + 1)):
                if read_u64(key, 3) > now_ms or len(moved) >= limit:
                    nexts[part] = read_u64(key, 3)
                    break
                moved.append((key, Entry.unpack(raw)))
                heads[part] = key
            if len(moved) >= limit:
                break
        if moved:
            wb = self.store.batch()
            for key, entry in moved:
                wb.delete(key)
                wb.delete(_url_key(_W, _key_of(entry)))
            entries = [e for _, e in moved]
            layers = self._put_entries(wb, entries)
            self.store.write(wb, sync=False)  # lost with the machine: still due, moved again
            self._add_layers(layers)
            self._count_in(entries)
            self._count_waiting(Counter(e.partition for e in entries), -1)
            self.due.update(self._due_seconds(entries))
            self.due_head.update(heads)
        for part, nxt in nexts.items():
            if nxt is None:
                self.due_next.pop(part, None)
            else:
                self.due_next[part] = nxt
        return len(moved)

    def reschedule(self, due_at: dict[Key, float]) -> None:
        """Set the due time of URLs already known here (a strategy's ``at``): one waiting in
        the time index moves; one queued or in flight gets it for its next visit (see
        :meth:`overrides`)."""
        waiting = self._waiting_keys(list(due_at))
        self._move_waiting(waiting, lambda e: due_at[_key_of(e)])
        others = [k for k in due_at if k not in waiting]
        if others:
            wb = self.store.batch()
            for k in others:
                wb.put(_url_key(_O, k), _DUE.pack(due_at[k]))
            self.store.write(wb)
            self.has_overrides = True

    def changed(self, modified_at: dict[Key, float]) -> None:
        """Pages that changed at the given times (a sitemap's lastmod): those waiting for a
        visit and last fetched before their change are due now."""
        now = time.time()
        self._move_waiting(self._waiting_keys(list(modified_at)), lambda e: (
            now if (e.fetched_s or 0.0) < modified_at[_key_of(e)] else None))

    def _waiting_keys(self, keys: list[Key]) -> dict[Key, bytes]:
        found = self.store.multi_get([_url_key(_W, k) for k in keys])
        return {k: d for k, d in zip(keys, found) if d is not None}

    def _move_waiting(self, waiting: dict[Key, bytes],
                      due_of: Callable[[Entry], float | None]) -> None:
        """Give waiting entries (URL -> ``d`` key) the due time ``due_of`` says (None: leave
        the entry as it is), in one atomic write: into the queue if it has come, else to its
        place in the index."""
        if not waiting:
            return
        raws = self.store.multi_get(list(waiting.values()))
        wb = self.store.batch()
        now = time.time()
        to_queue: list[Entry] = []
        for (k, d_key), raw in zip(waiting.items(), raws):
            if raw is None:
                continue
            entry = Entry.unpack(raw)
            due = due_of(entry)
            if due is None:
                continue
            entry = dataclasses.replace(entry, not_before=due)
            wb.delete(d_key)
            wb.delete(_url_key(_W, k))
            if due <= now:
                to_queue.append(entry)
            else:
                self._put_waiting(wb, entry)
        layers = self._put_entries(wb, to_queue)
        self.store.write(wb)
        self._add_layers(layers)
        self._count_in(to_queue)
        self._count_waiting(Counter(e.partition for e in to_queue), -1)
        self.due.update(self._due_seconds(to_queue))

    def overrides(self, keys: list[Key]) -> dict[Key, float]:
        """Due times strategies set for URLs while they were queued or in flight."""
        if not self.has_overrides:
            return {}
        raws = self.store.multi_get([_url_key(_O, k) for k in keys])
        return {k: _DUE.unpack(raw)[0] for k, raw in zip(keys, raws) if raw}

    def overdue(self, now: float, grace_s: float) -> int:
        """Queued revisits due more than ``grace_s`` before ``now``."""
        limit = now - grace_s
        return sum(n for second, n in self.due.items() if second < limit)

    @staticmethod
    def _due_seconds(entries: Sequence[Entry | _Counted]) -> Counter[int]:
        return Counter(int(e.not_before) for e in entries if e.visit > 1)

    # -- cutting a batch ---------------------------------------------------------------------

    def cut(self, max_urls: int, host_cap: int, slots: HostSlots, max_layer: int | None,
            scan_limit: int | None = None, skip: Iterable[int] = ()) -> tuple[int, list[Entry]]:
        """Lease up to ``max_urls`` entries, at most ``host_cap`` per host (fewer where the
        host's delay would make them last over ``HOST_RUN_S``: ``HostSlots.batch_cap``), from
        hosts that are available; scan at most ``scan_limit`` entries (default: 20 per URL
        wanted, at least 1000); take nothing of the partitions in ``skip``.  Returns (batch
        id, entries); the entries move to the lease table in one atomic write.

        At most half of a host's URLs in a batch (at least one) are retries: a host's failed
        URLs come due together, and a batch of them alone would fail whole and back the host
        off, its good URLs queued behind them.

        The partitions' queues are merged by (layer, score) (see the module docstring): a
        partition is read while its entries' (layer, score) stays the lowest of all heads, and
        left once every host of it with queued URLs is busy or full."""
        if max_urls <= 0:
            return 0, []
        now, wall = time.monotonic(), time.time()
        cut = _Cut(max_urls, scan_limit or max(1000, 20 * max_urls), host_cap, len(self.hosts))
        suffix = (max_layer + 1).to_bytes(2, "big") if max_layer is not None else b"\xff\xff"
        gate = (part_key(_Q, 0) + suffix)[3:5]
        skipped = set(skip)
        parts = [p for p in sorted(self.part_hosts) if p not in skipped]
        self.rotation += 1
        # Partitions are opened (an iterator, a seek) only when their turn comes: a cut takes
        # its URLs from a few of them.  Until then a partition sorts by ``head_band``, a lower
        # bound of its first key's (layer, score) (unknown: first).
        heap: list[tuple[bytes, int, int, bytes | None, bytes, Any]] = []
        for i, part in enumerate(parts):
            band = self.head_band.get(part, b"")
            if band[:2] < gate:
                heap.append((band, (i - self.rotation) % len(parts), part, None, b"", None))
        heapq.heapify(heap)
        bounds: list[object] = []
        while heap and not cut.over():
            band, turn, part, key, raw, it = heapq.heappop(heap)
            stop = part_key(_Q, part) + suffix
            if it is None:  # its turn: open it, unless every host of it is busy
                if self._busy(cut, part, slots, now):
                    continue
                it, bound = self.store.iterate_from(self.head.get(part, part_key(_Q, part)),
                                                    _stop(part_key(_Q, part)))
                bounds.append(bound)  # alive as long as its iterator (see iterate_from)
                first: bytes | None = it.key() if it.valid() else None
                if first is not None and first < stop:
                    heapq.heappush(heap, (first[3:13], turn, part, first, it.value(), it))
                elif first is not None and first[:3] == stop[:3]:  # past the gate: not before
                    self.head_band[part] = first[3:13]  # it moves
                else:
                    self.head_band.pop(part, None)
                continue
            assert key is not None
            nxt = self._cut_band(cut, part, band, key, raw, it, stop, slots, now, wall)
            if nxt is not None:
                cut.left[part] = nxt[0]
                heapq.heappush(heap, (nxt[0][3:13], turn, part, *nxt, it))
            else:
                cut.left.pop(part, None)
        for _, _, part, key, _, it in heap:
            if it is not None and key is not None:  # opened, not read: its band is known
                self.head_band[part] = key[3:13]
        for part, key in [*cut.last_taken.items(), *cut.first_left.items()]:
            self.head[part] = key  # (first_left wins: later in the list)
        for part in cut.last_taken.keys() | cut.first_left.keys():
            first = cut.first_left.get(part) or cut.left.get(part)
            if first is None:  # all it had up to the gate was taken
                self.head_band.pop(part, None)
            else:
                self.head_band[part] = first[3:13]
        if not cut.taken:
            return 0, []
        return self._lease(cut, slots)

    def _busy(self, cut: _Cut, part: int, slots: HostSlots, now: float) -> bool:
        """Count the hosts of ``part`` that cannot be taken from now (in flight, waiting)
        as blocked before reading it; returns whether none is left.  The partition is then
        left as soon as its other hosts are full, instead of read on to learn it."""
        hosts = self.part_hosts[part]
        per_host, blocked = cut.per_host, cut.blocked
        for host in hosts:
            if host not in blocked and host not in per_host and not slots.available(host, now):
                blocked.add(host)
                cut.part_busy[part] += 1
        return cut.part_busy[part] >= len(hosts)

    def _cut_band(self, cut: _Cut, part: int, band: bytes, key: bytes, raw: bytes, it: Any,
                  stop: bytes, slots: HostSlots, now: float, wall: float
                  ) -> tuple[bytes, bytes] | None:
        """Take from ``part`` while its keys are in ``band`` (and the cut goes on); returns
        the partition's next key and value to merge again, or None once it is done with.

        The hot loop of a cut: what ends it early (the cut's size, every host of the
        partition or of the cut busy or full) is checked again only when it can change."""
        hosts = len(self.part_hosts[part])
        per_host, blocked, taken, cap = cut.per_host, cut.blocked, cut.taken, cut.host_cap
        retried, caps = cut.retried, cut.caps
        first_left, unpack, of_fields = cut.first_left, msgpack.unpackb, Entry.of_fields
        step, valid, key_of, value_of = it.next, it.valid, it.key, it.value
        scanned, limit = 0, cut.scan_limit - cut.scanned
        over = cut.over() or cut.part_busy[part] >= hosts
        # The band's keys end below the first key of the next (layer, score), or at ``stop``.
        end = min(stop, _successor(key[:13]))
        try:
            while not over and scanned < limit:
                scanned += 1
                fields = unpack(raw)  # an Entry is built only for what is taken
                host = fields[HOST]
                count = per_host.get(host, 0)
                if host in blocked or count >= caps.get(host, cap) or fields[NOT_BEFORE] > wall:
                    first_left.setdefault(part, key)
                elif not count and not slots.available(host, now):
                    blocked.add(host)
                    cut.part_busy[part] += 1
                    first_left.setdefault(part, key)
                    over = cut.part_busy[part] >= hosts or cut.over()
                elif fields[ATTEMPTS] and retried.get(host, 0) >= max(1, caps.get(host, cap) // 2):
                    first_left.setdefault(part, key)  # (its turn comes in a later batch)
                else:
                    if not count and (own := slots.batch_cap(host, cap)) < cap:
                        caps[host] = own
                    if fields[ATTEMPTS]:
                        retried[host] = retried.get(host, 0) + 1
                    per_host[host] = count + 1
                    taken.append((key, of_fields(fields)))
                    cut.last_taken[part] = key
                    if count + 1 == caps.get(host, cap):
                        cut.full += 1
                        cut.part_busy[part] += 1
                        over = cut.part_busy[part] >= hosts or cut.over()
                    over = over or len(taken) >= cut.max_urls
                step()
                if not valid():
                    return None
                key = key_of()
                if key >= end:
                    return (key, value_of()) if key < stop else None
                raw = value_of()
            first_left.setdefault(part, key)
            return None
        finally:
            cut.scanned += scanned

    def _lease(self, cut: _Cut, slots: HostSlots) -> tuple[int, list[Entry]]:
        batch_id = self.next_batch
        self.next_batch += 1
        wb = self.store.batch()
        layers: Layers = Counter()
        for i, (key, entry) in enumerate(cut.taken):
            wb.delete(key)
            wb.put(_L + u64(batch_id) + u64(i), entry.pack())
            layers[entry.partition, int.from_bytes(key[3:5], "big")] += 1
        wb.put(_C, self._counters())
        # Not synced: a lease lost with the machine leaves its URLs queued, to be cut again.
        self.store.write(wb, sync=False)
        self._add_layers(layers, -1)  # counted once the leases are written
        entries = [e for _, e in cut.taken]
        self._count_out(entries)
        for second, n in self._due_seconds(entries).items():
            if (left := self.due[second] - n) > 0:
                self.due[second] = left
            else:  # (a counter recovered without the revisits may lack it)
                del self.due[second]
        self.leased_total += len(entries)
        slots.lease(set(cut.per_host))
        return batch_id, entries

    def complete(self, wb: WriteBatch, batch_id: int, keys: list[Key],
                 retry: tuple[Entry, ...] | list[Entry] = (), visits: list[int] | None = None,
                 revisit: dict[Key, Entry] | None = None) -> Completion:
        """Add to ``wb`` the completion of a batch: drop its leases, record the URLs of
        ``keys`` as done (each at its visit, default 1), queue the ``retry`` entries again
        (their URLs get another attempt) and put the ``revisit`` entries (URL -> next visit)
        of the visits recorded now in the time index, each waiting until its ``not_before``.
        Once ``wb`` is written, :meth:`apply` the result.

        ``Completion.fresh`` holds the URLs whose visit was not recorded before (the rows to
        output): completing the same batch twice outputs nothing the second time."""
        done = self.store.multi_get([_url_key(_P, k) for k in keys])
        visits = visits or [1] * len(keys)
        fresh: dict[Key, int] = {}
        for k, stored, visit in zip(keys, done, visits):
            if _stored_visit(stored) < visit:
                fresh[k] = visit
        released = 0
        for key, _ in self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1)):
            wb.delete(key)
            released += 1
        not_due: Counter[int] = Counter()
        for k, visit in fresh.items():
            wb.put(_url_key(_P, k), _visit_bytes(visit))
            if revisit and (entry := revisit.get(k)) is not None:
                self._put_waiting(wb, entry)
                wb.delete(_url_key(_O, k))
                not_due[k[0]] += 1
        layers = self._put_entries(wb, retry, done_delta=len(fresh))
        return Completion(list(fresh), layers, tuple(retry), released, not_due,
                          self._due_seconds(retry))

    def requeue(self, wb: WriteBatch, batch_id: int, entries: Sequence[Entry]) -> Completion:
        """Add to ``wb`` the return of some of a batch's entries while the batch goes on (their
        hosts' parts of it ended): their leases dropped, ``entries`` (as their next attempt
        has them) queued again.  Once ``wb`` is written, :meth:`apply` the result; the batch's
        completion then drops only the leases left."""
        wanted = {e.fingerprint for e in entries}
        released = 0
        for key, raw in self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1)):
            if msgpack.unpackb(raw)[FINGERPRINT] in wanted:
                wb.delete(key)
                released += 1
        layers = self._put_entries(wb, list(entries))
        return Completion([], layers, tuple(entries), released, Counter(),
                          self._due_seconds(entries))

    def apply(self, completion: Completion) -> None:
        """Count a completion whose WriteBatch was written."""
        self.done_total += len(completion.fresh)
        self._add_layers(completion.layers)
        self._count_in(completion.queued)
        self.leased_total -= completion.released
        self._count_waiting(completion.not_due)
        self.due.update(completion.due)

    def _count_in(self, entries: Iterable[Entry | _Counted]) -> None:
        for entry in entries:
            host = self.hosts.get(entry.host)
            if host is None:
                host = self.hosts[entry.host] = HostQueue(entry.partition)
                self.part_hosts.setdefault(entry.partition, set()).add(entry.host)
            host.queued += 1
            if entry.not_before > time.time() - 1:  # a time to come
                host.later[int(entry.not_before)] += 1

    def _count_out(self, entries: Iterable[Entry | _Counted]) -> None:
        for entry in entries:
            host = self.hosts[entry.host]
            host.queued -= 1
            second = int(entry.not_before)
            if second in host.later:  # (not if its time is gone: forgotten, see not_yet)
                if host.later[second] > 1:
                    host.later[second] -= 1
                else:
                    del host.later[second]
            if not host.queued:
                del self.hosts[entry.host]
                hosts = self.part_hosts[entry.partition]
                hosts.discard(entry.host)
                if not hosts:
                    del self.part_hosts[entry.partition]

    def _put_entries(self, wb: WriteBatch, entries: tuple[Entry, ...] | list[Entry],
                     done_delta: int = 0) -> Layers:
        """Add queue keys for ``entries`` to ``wb`` (with the counters, ``done_delta`` more
        URLs done); returns the counts to add once ``wb`` is written."""
        layers: Layers = Counter()
        for entry in entries:
            key, layer = self._key(entry, self.next_seq)
            self.next_seq += 1
            head = self.head.get(entry.partition)  # (none: the partition's first key)
            if head is not None and key < head:
                self.head[entry.partition] = key
            band = self.head_band.get(entry.partition)
            if band is not None and key[3:13] < band:
                self.head_band[entry.partition] = key[3:13]
            wb.put(key, entry.pack())
            layers[entry.partition, layer] += 1
        wb.put(_C, self._counters(done_delta))
        return layers

    def leased(self, batch_id: int) -> list[Entry]:
        """The entries leased to a batch."""
        return [Entry.unpack(raw) for _, raw in
                self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1))]

    def stale_leases(self) -> list[int]:
        """Batch ids leased by an earlier incarnation of this worker."""
        ids: set[int] = set()
        for key, _ in self.store.scan(_L, _L + b"\xff"):
            ids.add(read_u64(key, 1))
        return sorted(ids)

    # -- partitions moving (see raycrawl.storage.moves) --------------------------------------

    def leases(self) -> Iterator[Entry]:
        """The entries leased to batches in flight."""
        return (Entry.unpack(raw) for _, raw in self.store.scan(_L, _L + b"\xff"))

    def forget(self, partition: int) -> None:
        """Take ``partition``'s entries out of the counts (before its keys are dropped)."""
        self._recount(part_key(_Q, partition), part_key(_D, partition),
                      part_key(_O, partition), -1)
        if self.owned is not None:
            self.owned.discard(partition)
        for table in (self.head, self.head_band, self.due_head, self.due_next):
            table.pop(partition, None)

    def reserve(self, next_seq: int) -> None:
        """Keys up to ``next_seq`` were written by another worker (a partition ingested from
        it): ours go on above them, so no key of it is ever written again.  Durable."""
        if next_seq > self.next_seq:
            self.next_seq = next_seq
            wb = self.store.batch()
            wb.put(_C, self._counters())
            self.store.write(wb)

    def adopt(self, partition: int) -> None:
        """Count ``partition``'s entries (ingested from another worker, see :meth:`reserve`)
        and cut them from now on."""
        if self.owned is not None:
            self.owned.add(partition)
        for table in (self.head, self.head_band, self.due_head, self.due_next):
            table.pop(partition, None)
        self._recount(part_key(_Q, partition), part_key(_D, partition),
                      part_key(_O, partition))


def _stop(start: bytes) -> bytes:
    """The end of the range ``start`` begins: its partition's, or its table's."""
    if len(start) == 1:
        return start + b"\xff\xff\xff"
    return part_key(start[:1], int.from_bytes(start[1:3], "big") + 1)


def _successor(prefix: bytes) -> bytes:
    """The least key above every key that starts with ``prefix`` (not all 0xff)."""
    return (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")
