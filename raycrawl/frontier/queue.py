"""The DB worker's queue: scheduled URLs in RocksDB, cut into polite spider-feed batches.

Keys::

    q <layer:u16> <-score:sortable f64> <seq:u64>   -> queued entry (msgpack)
    f <fingerprint:u64>                             -> b"" once a URL was ever enqueued here
    l <batch:u64> <seq:u64>                         -> an entry leased to an in-flight batch
    p <fingerprint:u64>                             -> b"" once a URL's page row was output
    c                                               -> counters (next seq, next batch id)

``layer`` is the URL's depth when the crawl advances depth by depth (``--max-depth``), else 0,
so a cut can stop at the current depth gate.  Within a layer, higher scores come first and
equal scores in arrival order.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from raycrawl.formats.entry import Entry
from raycrawl.formats.storage import Store, WriteBatch, read_u64, sortable_float, u64
from raycrawl.frontier.politeness import HostSlots

_Q, _F, _L, _P, _C = b"q", b"f", b"l", b"p", b"c"


@dataclass(frozen=True, slots=True)
class Completion:
    """A batch's completion added to a WriteBatch, to :meth:`FrontierQueue.apply` once it is
    written: the fingerprints done for the first time, the retries queued per layer."""

    fresh: list[int]
    layers: Counter[int] = field(default_factory=Counter)
    released: int = 0  # leases dropped


class FrontierQueue:
    """Durable queue of one DB worker; every mutation is one atomic WriteBatch."""

    def __init__(self, store: Store, layered: bool) -> None:
        self.store = store
        self.layered = layered
        raw = store.get(_C)
        counters: tuple[int, int, int] = tuple(msgpack.unpackb(raw)) if raw else (0, 1, 0)
        self.next_seq, self.next_batch, self.done_total = counters
        self.by_layer: Counter[int] = Counter()
        for key, _ in store.scan(_Q, _Q + b"\xff"):
            self.by_layer[int.from_bytes(key[1:3], "big")] += 1
        self.leased_total = sum(1 for _ in store.scan(_L, _L + b"\xff"))  # URLs under lease
        self.enqueued_total = 0
        # No queued key sorts below ``head``: a cut seeks there instead of to the first queue
        # key, past the deletions of entries leased earlier (RocksDB keeps them as tombstones
        # until compaction, and an iterator walks every one).  Cuts move it up, any put of a
        # smaller key moves it down.
        self.head = _Q

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
        if not fresh:
            return 0
        wb = self.store.batch()
        for entry in fresh:
            wb.put(_F + u64(entry.fingerprint), b"")
        layers = self._put_entries(wb, fresh)
        self.store.write(wb)
        self.by_layer.update(layers)
        self.enqueued_total += len(fresh)
        return len(fresh)

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
        taken: list[tuple[bytes, Entry]] = []
        first_left: bytes | None = None  # the first key seen and not taken
        for scanned, (key, raw) in enumerate(self.store.scan(self.head, stop)):
            if scanned >= scan_limit or len(taken) >= max_urls:
                first_left = first_left or key
                break
            entry = Entry.unpack(raw)
            host = entry.host
            take = host not in blocked and per_host[host] < host_cap and entry.not_before <= wall
            if take and not per_host[host] and not slots.available(host, now):
                blocked.add(host)
                take = False
            if take:
                per_host[host] += 1
                taken.append((key, entry))
            elif first_left is None:
                first_left = key
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
        self.leased_total += len(taken)
        # Everything below the first key left behind was taken; if none was left, everything
        # up to the last one taken (its tombstone is the only one the next seek meets).
        self.head = first_left or taken[-1][0]
        slots.lease(set(per_host))
        return batch_id, [e for _, e in taken]

    def complete(self, wb: WriteBatch, batch_id: int, fingerprints: list[int],
                 retry: tuple[Entry, ...] | list[Entry] = ()) -> Completion:
        """Add to ``wb`` the completion of a batch: drop its leases, record ``fingerprints``
        as done, queue the ``retry`` entries again (their URLs get another attempt).  Once
        ``wb`` is written, :meth:`apply` the result.

        ``Completion.fresh`` holds the fingerprints not recorded before (the rows to output):
        completing the same batch twice outputs nothing the second time."""
        done = self.store.multi_get([_P + u64(fp) for fp in fingerprints])
        fresh = list(dict.fromkeys(fp for fp, d in zip(fingerprints, done) if d is None))
        released = 0
        for key, _ in self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1)):
            wb.delete(key)
            released += 1
        for fp in fresh:
            wb.put(_P + u64(fp), b"")
        layers = self._put_entries(wb, retry, done_delta=len(fresh))
        return Completion(fresh, layers, released)

    def apply(self, completion: Completion) -> None:
        """Count a completion whose WriteBatch was written."""
        self.done_total += len(completion.fresh)
        self.by_layer.update(completion.layers)
        self.leased_total -= completion.released

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

    def requeue(self, batch_id: int) -> list[Entry]:
        """Put a batch's leased entries back in the queue; the batch's leases are gone
        afterwards.  Returns the entries put back."""
        leased = list(self.store.scan(_L + u64(batch_id), _L + u64(batch_id + 1)))
        entries = [Entry.unpack(raw) for _, raw in leased]
        wb = self.store.batch()
        for key, _ in leased:
            wb.delete(key)
        layers = self._put_entries(wb, entries)
        self.store.write(wb)
        self.by_layer.update(layers)
        self.leased_total -= len(leased)
        return entries

    def stale_leases(self) -> list[int]:
        """Batch ids leased by an earlier incarnation of this worker."""
        ids: set[int] = set()
        for key, _ in self.store.scan(_L, _L + b"\xff"):
            ids.add(read_u64(key, 1))
        return sorted(ids)
