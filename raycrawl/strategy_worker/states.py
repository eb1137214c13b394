"""URL states of a strategy worker's partitions, kept in RocksDB.

Access is batched as Frontera did it: collect the fingerprints of a spider-log batch, read them
in one ``multi_get``, let the strategy work on the in-memory copies, write the changes in one
``WriteBatch``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from raycrawl.models import URLState
from raycrawl.storage.store import Store, part_key, u64

_RECORD = struct.Struct(">Bid")  # state, depth, score
KNOWN_MAX = 1 << 19  # fingerprints a worker remembers as known (KnownURLs): up to 60 MiB
_STATES = tuple(sorted(URLState))  # by value: URLState(n) without the enum call
TABLE = b"s"  # s <partition> <fingerprint> -> record (partitioned: raycrawl.storage.store)


@dataclass(slots=True)
class StateRecord:
    state: URLState
    depth: int
    score: float


class KnownURLs:
    """Fingerprints of URLs whose state this worker committed as past ``NOT_CRAWLED``: a link
    to one is known without reading its record (most links of a batch are; at a million URLs
    their reads were 64% of a strategy worker, benchmarks/README.md).  A state never goes
    back, so a fingerprint stays right here as long as the store it was committed to (a
    partition moved in or out: :meth:`clear`).  Bounded: two generations of ``size / 2``;
    when the newer fills, the older is dropped (a fingerprint seen again in it comes back)."""

    def __init__(self, size: int = KNOWN_MAX) -> None:
        self.half = max(1, size // 2)
        self.new: set[int] = set()
        self.old: set[int] = set()

    def __contains__(self, fingerprint: int) -> bool:
        return fingerprint in self.new or fingerprint in self.old

    def __len__(self) -> int:
        return len(self.new) + len(self.old)

    def add(self, fingerprints: Iterable[int]) -> None:
        self.new.update(fingerprints)
        if len(self.new) >= self.half:
            self.old, self.new = self.new, set()

    def clear(self) -> None:
        self.new, self.old = set(), set()


class URLStates:
    """fingerprint -> :class:`StateRecord` over a :class:`Store`.

    ``refresh`` loads records into the cache; ``flush`` writes every changed record in one
    atomic batch and empties the cache, so memory holds one batch's states at most.  Records
    are decoded when asked for: most links of a batch are known URLs whose state is all that
    is read (its first byte), and those of :class:`KnownURLs` are not read at all unless asked
    for (the cache holds their partition until then).
    """

    def __init__(self, store: Store, known_max: int = KNOWN_MAX) -> None:
        self.store = store
        self.cache: dict[int, StateRecord | bytes | int | None] = {}
        self.dirty: dict[int, int] = {}  # fingerprint -> partition, of the records changed
        self.known = KnownURLs(known_max)

    def refresh(self, partitions: list[int], fingerprints: list[int],
                known_unread: bool = False) -> None:
        """Read the records of the URLs of ``fingerprints`` (in ``partitions``) not cached;
        with ``known_unread``, not those of known URLs (:meth:`is_new` is False for them, and
        :meth:`get` and :meth:`state` read them when asked)."""
        cache, known = self.cache, self.known
        missing = []
        for fp, p in dict(zip(fingerprints, partitions)).items():
            if fp in cache:
                continue
            if known_unread and fp in known:
                cache[fp] = p
            else:
                missing.append((fp, p))
        cache.update(zip([fp for fp, _ in missing], self.store.multi_get(
            [part_key(TABLE, p) + u64(fp) for fp, p in missing])))

    def _record(self, fingerprint: int) -> StateRecord | bytes | None:
        record = self.cache.get(fingerprint)
        if isinstance(record, int):  # known, not read yet: its partition
            record = self.cache[fingerprint] = self.store.get(part_key(TABLE, record)
                                                              + u64(fingerprint))
        return record

    def get(self, fingerprint: int) -> StateRecord | None:
        """The record of a refreshed fingerprint; None when the URL was never seen."""
        record = self._record(fingerprint)
        if isinstance(record, bytes):
            state, depth, score = _RECORD.unpack(record)
            record = self.cache[fingerprint] = StateRecord(_STATES[state], depth, score)
        return record

    def state(self, fingerprint: int) -> URLState:
        record = self._record(fingerprint)
        return URLState.NOT_CRAWLED if record is None else _STATES[_state_of(record)]

    def is_new(self, fingerprint: int) -> bool:
        """Whether a refreshed URL is ``NOT_CRAWLED`` (a known one is not read for it)."""
        record = self.cache.get(fingerprint)
        if record is None:
            return True
        if isinstance(record, int):
            return False
        return _state_of(record) == URLState.NOT_CRAWLED

    def set(self, partition: int, fingerprint: int, state: URLState, depth: int,
            score: float) -> None:
        self.cache[fingerprint] = StateRecord(state, depth, score)
        self.dirty[fingerprint] = partition

    def discard(self) -> None:
        """Forget unwritten changes and the cache."""
        self.cache.clear()
        self.dirty.clear()

    def flush(self) -> None:
        """Write changed records atomically, then forget the cache (the URLs it holds past
        ``NOT_CRAWLED`` are known from now on)."""
        if self.dirty:
            wb = self.store.batch()
            for fp, partition in self.dirty.items():
                rec = self.cache[fp]
                assert isinstance(rec, StateRecord)  # set() always stores a record
                wb.put(part_key(TABLE, partition) + u64(fp),
                       _RECORD.pack(int(rec.state), rec.depth, rec.score))
            self.store.write(wb)
        self.known.add([fp for fp, rec in self.cache.items() if rec is not None and (
            isinstance(rec, int)  # (known: seen again, it stays in the newer generation)
            or _state_of(rec) != URLState.NOT_CRAWLED)])
        self.cache.clear()
        self.dirty.clear()


def _state_of(record: StateRecord | bytes) -> int:
    """A record's state, from its first byte while it is not decoded."""
    return record[0] if isinstance(record, bytes) else record.state
