"""URL states of a strategy worker's partitions, kept in RocksDB.

Access is batched as Frontera did it: collect the fingerprints of a spider-log batch, read them
in one ``multi_get``, let the strategy work on the in-memory copies, write the changes in one
``WriteBatch``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from raycrawl.models import URLState
from raycrawl.storage.store import Store, part_key, u64

_RECORD = struct.Struct(">Bid")  # state, depth, score
_STATES = tuple(sorted(URLState))  # by value: URLState(n) without the enum call
TABLE = b"s"  # s <partition> <fingerprint> -> record (partitioned: raycrawl.storage.store)


@dataclass(slots=True)
class StateRecord:
    state: URLState
    depth: int
    score: float


class URLStates:
    """fingerprint -> :class:`StateRecord` over a :class:`Store`.

    ``refresh`` loads records into the cache; ``flush`` writes every changed record in one
    atomic batch and empties the cache, so memory holds one batch's states at most.  Records
    are decoded when asked for: most links of a batch are known URLs whose state is all that
    is read (its first byte).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache: dict[int, StateRecord | bytes | None] = {}
        self.dirty: dict[int, int] = {}  # fingerprint -> partition, of the records changed

    def refresh(self, partitions: list[int], fingerprints: list[int]) -> None:
        """Read the records of the URLs of ``fingerprints`` (in ``partitions``) not cached."""
        cache = self.cache
        missing = [(fp, p) for fp, p in dict(zip(fingerprints, partitions)).items()
                   if fp not in cache]
        cache.update(zip([fp for fp, _ in missing], self.store.multi_get(
            [part_key(TABLE, p) + u64(fp) for fp, p in missing])))

    def get(self, fingerprint: int) -> StateRecord | None:
        """The record of a refreshed fingerprint; None when the URL was never seen."""
        record = self.cache[fingerprint]
        if isinstance(record, bytes):
            state, depth, score = _RECORD.unpack(record)
            record = self.cache[fingerprint] = StateRecord(_STATES[state], depth, score)
        return record

    def state(self, fingerprint: int) -> URLState:
        record = self.cache.get(fingerprint)
        if record is None:
            return URLState.NOT_CRAWLED
        return _STATES[record[0]] if isinstance(record, bytes) else record.state

    def set(self, partition: int, fingerprint: int, state: URLState, depth: int,
            score: float) -> None:
        self.cache[fingerprint] = StateRecord(state, depth, score)
        self.dirty[fingerprint] = partition

    def discard(self) -> None:
        """Forget unwritten changes and the cache."""
        self.cache.clear()
        self.dirty.clear()

    def flush(self) -> None:
        """Write changed records atomically, then forget the cache."""
        if self.dirty:
            wb = self.store.batch()
            for fp, partition in self.dirty.items():
                rec = self.cache[fp]
                assert isinstance(rec, StateRecord)  # set() always stores a record
                wb.put(part_key(TABLE, partition) + u64(fp),
                       _RECORD.pack(int(rec.state), rec.depth, rec.score))
            self.store.write(wb)
        self.cache.clear()
        self.dirty.clear()
