"""The DB worker's queue: scheduled URLs in RocksDB, cut into polite spider-feed batches.

Keys::

    q <layer:u16> <-score:sortable f64> <seq:u64>   -> queued entry (msgpack)
    f <fingerprint:u64>                             -> b"" once a URL was ever enqueued here
    l <batch:u64> <seq:u64>                         -> an entry leased to an in-flight batch
    p <fingerprint:u64>                             -> the last visit whose page row was output
                                                       (u32; b"" for visit 1)
    d <due:u64 ms> <seq:u64>                        -> an entry waiting for its due time
    v <fingerprint:u64>                             -> its ``d`` key
    n <fingerprint:u64>                             -> a due time (f64) a strategy set for a URL
                                                       in flight: its next visit's
    c                                               -> counters (next seq, next batch id)

``layer`` is the URL's depth when the crawl advances depth by depth (``--max-depth``), else 0,
so a cut can stop at the current depth gate.  Within a layer, higher scores come first and
equal scores in arrival order.

Revisits (and URLs a strategy schedules for later) wait in the time index ``d``; once due,
:meth:`FrontierQueue.promote` moves them into ``q``, where they take their turn by score.  A
cut therefore never reads an entry that is not due, and a URL has one entry at any time (in
``q``, ``d`` or ``l``): the store grows with URLs, not with visits.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from raycrawl.db_worker.politeness import HostSlots
from raycrawl.formats.entry import HOST, NOT_BEFORE, Entry
from raycrawl.storage.store import Store, WriteBatch, read_u64, sortable_float, u64

_Q, _F, _L, _P, _C, _D, _W, _O = b"q", b"f", b"l", b"p", b"c", b"d", b"v", b"n"
_DUE = struct.Struct(">d")
PROMOTE_LIMIT = 10_000  # entries one promote moves at most (the next cut moves the rest)


def due_key_ms(due: float) -> bytes:
    return u64(max(0, int(due * 1000)))


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
    written: the fingerprints done for the first time, the retries queued per layer."""

    fresh: list[int]
    layers: Counter[int] = field(default_factory=Counter)
    queued: tuple[Entry, ...] = ()  # retries queued again
    released: int = 0  # leases dropped
    not_due: int = 0  # next visits put in the time index
    due: Counter[int] = field(default_factory=Counter)  # revisits queued, by due second


class FrontierQueue:
    """Durable queue of one DB worker; every mutation is one atomic WriteBatch."""

    def __init__(self, store: Store, layered: bool, revisits: bool = False) -> None:
        self.store = store
        self.layered = layered
        raw = store.get(_C)
        counters: tuple[int, int, int] = tuple(msgpack.unpackb(raw)) if raw else (0, 1, 0)
        self.next_seq, self.next_batch, self.done_total = counters
        self.not_due = sum(1 for _ in store.scan(_D, _D + b"\xff"))  # URLs not due yet
        self.has_overrides = next(store.scan(_O, _O + b"\xff"), None) is not None
        # Revisits due and queued, by due second (for ``overdue``): read from the entries only
        # when the crawl revisits.
        self.due: Counter[int] = Counter()
        track = revisits or self.not_due > 0
        self.by_layer: Counter[int] = Counter()
        # Queued entries by host, and of those the ones not to be fetched before a time (a
        # retry's backoff), by second: why URLs wait (see DBShard.reasons).
        self.hosts: dict[str, HostQueue] = {}
        for key, raw_entry in store.scan(_Q, _Q + b"\xff"):
            self.by_layer[int.from_bytes(key[1:3], "big")] += 1
            entry = Entry.unpack(raw_entry)
            self._count_in((entry,))
            if track and entry.visit > 1:
                self.due[int(entry.not_before)] += 1
        self.leased_total = sum(1 for _ in store.scan(_L, _L + b"\xff"))  # URLs under lease
        self.enqueued_total = 0
        # No queued key sorts below ``head``: a cut seeks there instead of to the first queue
        # key, past the deletions of entries leased earlier (RocksDB keeps them as tombstones
        # until compaction, and an iterator walks every one).  Cuts move it up, any put of a
        # smaller key moves it down.  ``due_head`` does the same for the time index.
        self.head = _Q
        self.due_head = _D

    def _counters(self, done_delta: int = 0) -> bytes:
        return msgpack.packb((self.next_seq, self.next_batch, self.done_total + done_delta))

    @property
    def queued(self) -> int:
        return sum(self.by_layer.values())

    def queued_up_to(self, layer: int) -> int:
        return sum(n for d, n in self.by_layer.items() if d <= layer)

    def _key(self, entry: Entry, seq: int) -> tuple[bytes, int]:
        layer = min(entry.depth, 0xFFFF) if self.layered else 0
        return _Q + layer.to_bytes(2, "big") + sortable_float(-entry.score) + u64(seq), layer

    def push(self, entries: list[Entry]) -> int:
        """Queue the entries not enqueued here before; durable on return. Returns how many."""
        if not entries:
            return 0
        unique = list({e.fingerprint: e for e in entries}.values())
        known = self.store.multi_get([_F + u64(e.fingerprint) for e in unique])
        fresh = [e for e, k in zip(unique, known) if k is None]
        again = {e.fingerprint: e.not_before for e, k in zip(unique, known)
                 if k is not None and e.not_before}
        if again:  # a strategy's ``at`` for a URL fetched before: its next visit
            self.reschedule(again)
        if not fresh:
            return 0
        wb = self.store.batch()
        for entry in fresh:
            wb.put(_F + u64(entry.fingerprint), b"")
        now = time.time()
        later = [e for e in fresh if e.not_before > now]  # a strategy's ``at``
        for entry in later:
            self._put_waiting(wb, entry)
        queued = [e for e in fresh if e.not_before <= now] if later else fresh
        layers = self._put_entries(wb, queued)
        self.store.write(wb)
        self.by_layer.update(layers)
        self._count_in(queued)
        self.not_due += len(later)
        self.enqueued_total += len(fresh)
        return len(fresh)

    # -- the time index ----------------------------------------------------------------------

    def _put_waiting(self, wb: WriteBatch, entry: Entry) -> None:
        """Add to ``wb`` an entry that waits until its ``not_before`` (count it once written)."""
        key = _D + due_key_ms(entry.not_before) + u64(self.next_seq)
        self.next_seq += 1
        if key < self.due_head:
            self.due_head = key
        wb.put(key, entry.pack())
        wb.put(_W + u64(entry.fingerprint), key)

    def promote(self, now: float, limit: int = PROMOTE_LIMIT) -> int:
        """Move the entries due by ``now`` (wall clock) from the time index into the queue,
        at most ``limit``, in one atomic write; returns how many."""
        stop = _D + due_key_ms(now) + b"\xff"
        moved = [(key, Entry.unpack(raw)) for key, raw in
                 itertools.islice(self.store.scan(self.due_head, stop), limit)]
        if not moved:
            return 0
        wb = self.store.batch()
        for key, entry in moved:
            wb.delete(key)
            wb.delete(_W + u64(entry.fingerprint))
        entries = [e for _, e in moved]
        layers = self._put_entries(wb, entries)
        self.store.write(wb, sync=False)  # lost with the machine: still due, moved again
        self.by_layer.update(layers)
        self._count_in(entries)
        self.not_due -= len(moved)
        self.due.update(self._due_seconds(entries))
        self.due_head = moved[-1][0]
        return len(moved)

    def reschedule(self, due_at: dict[int, float]) -> None:
        """Set the due time of URLs already known here (a strategy's ``at``): one waiting in
        the time index moves; one queued or in flight gets it for its next visit (see
        :meth:`overrides`)."""
        waiting = self._waiting_keys(list(due_at))
        self._move_waiting(waiting, lambda e: due_at[e.fingerprint])
        others = [fp for fp in due_at if fp not in waiting]
        if others:
            wb = self.store.batch()
            for fp in others:
                wb.put(_O + u64(fp), _DUE.pack(due_at[fp]))
            self.store.write(wb)
            self.has_overrides = True

    def changed(self, modified_at: dict[int, float]) -> None:
        """Pages that changed at the given times (a sitemap's lastmod): those waiting for a
        visit and last fetched before their change are due now."""
        now = time.time()
        self._move_waiting(self._waiting_keys(list(modified_at)), lambda e: (
            now if (e.fetched_s or 0.0) < modified_at[e.fingerprint] else None))

    def _waiting_keys(self, fingerprints: list[int]) -> dict[int, bytes]:
        keys = self.store.multi_get([_W + u64(fp) for fp in fingerprints])
        return {fp: key for fp, key in zip(fingerprints, keys) if key is not None}

    def _move_waiting(self, waiting: dict[int, bytes],
                      due_of: Callable[[Entry], float | None]) -> None:
        """Give waiting entries (fingerprint -> ``d`` key) the due time ``due_of`` says (None:
        leave the entry as it is), in one atomic write: into the queue if it has come, else to
        its place in the index."""
        if not waiting:
            return
        raws = self.store.multi_get(list(waiting.values()))
        wb = self.store.batch()
        now = time.time()
        to_queue: list[Entry] = []
        for (fp, key), raw in zip(waiting.items(), raws):
            if raw is None:
                continue
            entry = Entry.unpack(raw)
            due = due_of(entry)
            if due is None:
                continue
            entry = dataclasses.replace(entry, not_before=due)
            wb.delete(key)
            wb.delete(_W + u64(fp))
            if due <= now:
                to_queue.append(entry)
            else:
                self._put_waiting(wb, entry)
        layers = self._put_entries(wb, to_queue)
        self.store.write(wb)
        self.by_layer.update(layers)
        self._count_in(to_queue)
        self.not_due -= len(to_queue)
        self.due.update(self._due_seconds(to_queue))

    def overrides(self, fingerprints: list[int]) -> dict[int, float]:
        """Due times strategies set for URLs while they were queued or in flight."""
        if not self.has_overrides:
            return {}
        raws = self.store.multi_get([_O + u64(fp) for fp in fingerprints])
        return {fp: _DUE.unpack(raw)[0] for fp, raw in zip(fingerprints, raws) if raw}

    def overdue(self, now: float, grace_s: float) -> int:
        """Queued revisits due more than ``grace_s`` before ``now``."""
        limit = now - grace_s
        return sum(n for second, n in self.due.items() if second < limit)

    @staticmethod
    def _due_seconds(entries: list[Entry] | tuple[Entry, ...]) -> Counter[int]:
        return Counter(int(e.not_before) for e in entries if e.visit > 1)

    def cut(self, max_urls: int, host_cap: int, slots: HostSlots, max_layer: int | None,
            scan_limit: int | None = None) -> tuple[int, list[Entry]]:
        """Lease up to ``max_urls`` entries, at most ``host_cap`` per host, from hosts that are
        available; scan at most ``scan_limit`` entries (default: 20 per URL wanted, at least
        1000).  Returns (batch id, entries); the entries move to the lease table in one atomic
        write."""
        if max_urls <= 0:
            return 0, []
        if scan_limit is None:
            scan_limit = max(1000, 20 * max_urls)
        now, wall = time.monotonic(), time.time()
        stop = _Q + ((max_layer + 1).to_bytes(2, "big") if max_layer is not None else b"\xff")
        per_host: Counter[str] = Counter()
        blocked: set[str] = set()
        full = 0  # hosts at host_cap
        taken: list[tuple[bytes, Entry]] = []
        first_left: bytes | None = None  # the first key seen and not taken
        for scanned, (key, raw) in enumerate(self.store.scan(self.head, stop)):
            if scanned >= scan_limit or len(taken) >= max_urls:
                first_left = first_left or key
                break
            fields = msgpack.unpackb(raw)  # an Entry is built only for what is taken
            host = fields[HOST]
            take = host not in blocked and per_host[host] < host_cap and fields[NOT_BEFORE] <= wall
            if take and not per_host[host] and not slots.available(host, now):
                blocked.add(host)
                take = False
            if take:
                per_host[host] += 1
                full += per_host[host] == host_cap
                taken.append((key, Entry.of_fields(fields)))
            elif first_left is None:
                first_left = key
            if len(blocked) + full >= len(self.hosts):
                break  # every host with URLs queued is busy or full: nothing more to take
        if not taken:
            if first_left is not None:
                self.head = first_left
            return 0, []
        batch_id = self.next_batch
        self.next_batch += 1
        wb = self.store.batch()
        layers: Counter[int] = Counter()
        for i, (key, entry) in enumerate(taken):
            wb.delete(key)
            wb.put(_L + u64(batch_id) + u64(i), entry.pack())
            layers[int.from_bytes(key[1:3], "big")] += 1
        wb.put(_C, self._counters())
        # Not synced: a lease lost with the machine leaves its URLs queued, to be cut again.
        self.store.write(wb, sync=False)
        self.by_layer.subtract(layers)  # counted once the leases are written
        self._count_out([e for _, e in taken])
        for second, n in self._due_seconds([e for _, e in taken]).items():
            if (left := self.due[second] - n) > 0:
                self.due[second] = left
            else:  # (a counter recovered without the revisits may lack it)
                del self.due[second]
        self.leased_total += len(taken)
        # Everything below the first key left behind was taken; if none was left, everything
        # up to the last one taken (its tombstone is the only one the next seek meets).
        self.head = first_left or taken[-1][0]
        slots.lease(set(per_host))
        return batch_id, [e for _, e in taken]

    def complete(self, wb: WriteBatch, batch_id: int, fingerprints: list[int],
                 retry: tuple[Entry, ...] | list[Entry] = (), visits: list[int] | None = None,
                 revisit: dict[int, Entry] | None = None) -> Completion:
        """Add to ``wb`` the completion of a batch: drop its leases, record ``fingerprints``
        as done (each at its visit, default 1), queue the ``retry`` entries again (their URLs
        get another attempt) and put the ``revisit`` entries (fingerprint -> next visit) of
        the visits recorded now in the time index, each waiting until its ``not_before``.
        Once ``wb`` is written, :meth:`apply` the result.

        ``Completion.fresh`` holds the fingerprints whose visit was not recorded before (the
        rows to output): completing the same batch twice outputs nothing the second time."""
        done = self.store.multi_get([_P + u64(fp) for fp in fingerprints])
        visits = visits or [1] * len(fingerprints)
        fresh: dict[int, int] = {}
        for fp, stored, visit in zip(fingerprints, done, visits):
            if _stored_visit(stored) < visit:
                fresh[fp] = visit
        released = 0
        for key, _ in self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1)):
            wb.delete(key)
            released += 1
        not_due = 0
        for fp, visit in fresh.items():
            wb.put(_P + u64(fp), _visit_bytes(visit))
            if revisit and (entry := revisit.get(fp)) is not None:
                self._put_waiting(wb, entry)
                wb.delete(_O + u64(fp))
                not_due += 1
        layers = self._put_entries(wb, retry, done_delta=len(fresh))
        return Completion(list(fresh), layers, tuple(retry), released, not_due,
                          self._due_seconds(retry))

    def apply(self, completion: Completion) -> None:
        """Count a completion whose WriteBatch was written."""
        self.done_total += len(completion.fresh)
        self.by_layer.update(completion.layers)
        self._count_in(completion.queued)
        self.leased_total -= completion.released
        self.not_due += completion.not_due
        self.due.update(completion.due)

    def _count_in(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            host = self.hosts.get(entry.host)
            if host is None:
                host = self.hosts[entry.host] = HostQueue()
            host.queued += 1
            if entry.not_before > time.time() - 1:  # a time to come
                host.later[int(entry.not_before)] += 1

    def _count_out(self, entries: Iterable[Entry]) -> None:
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

    def _put_entries(self, wb: WriteBatch, entries: tuple[Entry, ...] | list[Entry],
                     done_delta: int = 0) -> Counter[int]:
        """Add queue keys for ``entries`` to ``wb`` (with the counters, ``done_delta`` more
        URLs done); returns the per-layer counts to apply once ``wb`` is written."""
        layers: Counter[int] = Counter()
        for entry in entries:
            key, layer = self._key(entry, self.next_seq)
            self.next_seq += 1
            if key < self.head:
                self.head = key
            wb.put(key, entry.pack())
            layers[layer] += 1
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
