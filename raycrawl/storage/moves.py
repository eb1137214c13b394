"""A partition's state as one value that can cross processes and machines: a copy of its key
range (an SST file's bytes) and what its worker keeps of it in memory.

:func:`export_partition` makes the copy from one snapshot of the source's store;
:func:`ingest_partition` replaces whatever the target's store held of the partition by it (a
half-done earlier try included), so it can be done again with the same result.  The protocol
that orders a move's steps — fence, wait for its batches, freeze and copy, ingest, commit in
the assignment, take, drop — is ``raycrawl.coordinator.rescale``'s.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from raycrawl.storage.store import Store


@dataclass(frozen=True, slots=True)
class PartitionCopy:
    """Partition ``partition``'s keys (``sst``: an SST file's bytes, None when it holds none)
    and the source worker's memory of it (``memory``: the politeness state of its hosts, for
    a DB worker), with the source's next sequence number (keys copied must never be written
    again by the target's own counter)."""

    partition: int
    sst: bytes | None
    keys: int
    next_seq: int = 0
    memory: dict[str, Any] = field(default_factory=dict)


def export_partition(store: Store, partition: int, next_seq: int = 0,
                     memory: dict[str, Any] | None = None) -> PartitionCopy:
    with tempfile.TemporaryDirectory(prefix=".export-", dir=_beside(store)) as folder:
        path, keys = store.export(partition, folder)
        sst = None
        if path is not None:
            with open(path, "rb") as fh:
                sst = fh.read()
    return PartitionCopy(partition, sst, keys, next_seq, memory or {})


def ingest_partition(store: Store, copy: PartitionCopy) -> None:
    """Replace the store's keys of ``copy.partition`` by the copy's."""
    if copy.sst is None:
        store.ingest(copy.partition, None)
        return
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=_beside(store)) as folder:
        path = os.path.join(folder, f"partition-{copy.partition}.sst")
        with open(path, "wb") as fh:
            fh.write(copy.sst)
        store.ingest(copy.partition, path)


def _beside(store: Store) -> str:
    """A folder for temporary files next to the store's (not in it: RocksDB's own)."""
    return os.path.dirname(os.path.abspath(store.path))
