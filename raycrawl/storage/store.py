"""The embedded RocksDB store each worker keeps its shard in, and key encodings.

Keys are bytes with a one-letter table prefix and big-endian integers, so that RocksDB's
byte order is the order the frontier needs.  The tables of a DB worker's store: ``q f p d v n``
(its queue, ``db_worker.queue``), ``k`` (cookies, ``db_worker.shard``), ``r`` (robots.txt) —
partitioned — and ``c l`` (counters, leases), ``a`` (page budget), ``w o`` and ``i j`` (staged
and recorded pages and items, ``output.durable``) — the worker's own; of a strategy worker's:
``s`` (URL states), ``t T h g c C`` (traps), all partitioned.  A test keeps them apart.

**Partition-owned layout** (layout 2).  Every key of a partitioned table is the table's letter,
then its partition (2 bytes, big-endian), then the rest: a partition's state is the key ranges
``[letter + partition, letter + partition + 1)`` of those tables, which :meth:`Store.export`
writes to one SST file, :meth:`Store.ingest` loads into another store and :meth:`Store.drop`
deletes (see ``raycrawl.storage.moves``).  The worker's own keys stay where they are when a
partition moves.  A store records its layout under :data:`LAYOUT_KEY`; one written by an
older layout is refused on open with a one-line error (it is not migrated: the old layout
holds no partition in its keys, and reading it back would need the URLs of every key).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Options,
    Rdict,
    ReadOptions,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

from raycrawl.errors import StorageError

__all__ = ["Store", "WriteBatch", "part_key", "sortable_float", "u64"]

_U64 = struct.Struct(">Q")
LAYOUT = 2
LAYOUT_KEY = b"\x00layout"  # -> the layout's number (ASCII); sorts before every table
FENCE_KEY = b"\x00fence"  # + partition (2 bytes): fenced for a move (see Store.fence)


def part_key(table: bytes, partition: int) -> bytes:
    """The prefix of ``partition``'s keys in ``table``."""
    return table + partition.to_bytes(2, "big")


def part_range(table: bytes, partition: int) -> tuple[bytes, bytes]:
    """[start, stop) of ``partition``'s keys in ``table``."""
    return part_key(table, partition), part_key(table, partition + 1) if partition < 0xFFFF \
        else table + b"\xff\xff\xff"


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (a file renamed into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(data, offset)[0]


def sortable_float(value: float) -> bytes:
    """8 bytes whose byte order is the numeric order of ``value``."""
    (bits,) = _U64.unpack(struct.pack(">d", value))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return _U64.pack(bits)


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # point look-ups of fingerprints dominate
    opts.set_block_based_table_factory(table)
    opts.set_max_background_jobs(2)
    return opts


class Store:
    """One RocksDB database in ``path``; writes go through atomic :class:`WriteBatch` es.

    RocksDB's errors (a full disk, an I/O error) become :class:`StorageError` naming the store,
    here and nowhere else; nothing was written when one is raised."""

    def __init__(self, path: str, sync: bool = True, tables: bytes = b"") -> None:
        self.path = path
        self.tables = bytes(sorted(tables))  # the partitioned tables' letters
        with self.errors("open"):
            os.makedirs(path, exist_ok=True)
            self.db = Rdict(path, _options(), access_type=AccessType.read_write())
        self._sync, self._nosync = WriteOptions(), WriteOptions()
        self._sync.sync = sync  # False (CrawlConfig.sync_writes): acknowledged in the OS cache
        self._check_layout()

    def _check_layout(self) -> None:
        """Mark a new store with :data:`LAYOUT`; refuse one of another layout."""
        found = self.get(LAYOUT_KEY)
        if found is None and next(self.scan(b"", b"\xff"), None) is not None:
            found = b"1"  # written before stores recorded their layout
        if found is None:
            self.db.put(LAYOUT_KEY, str(LAYOUT).encode(), self._sync)
        elif found != str(LAYOUT).encode():
            self.db.close()
            raise StorageError(
                f"store {self.path} was written with store layout {found.decode()}; this "
                f"raycrawl reads layout {LAYOUT} (partition-owned keys): finish that crawl "
                f"with the raycrawl that started it, or start a new crawl")

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:  # rocksdict raises plain Exceptions with RocksDB's status
            raise StorageError(f"store {self.path}: {what} failed: {exc}") from None

    def batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, wb: WriteBatch, sync: bool = True) -> None:
        """Apply ``wb`` atomically.  With ``sync`` (what a worker acknowledges to another) it
        is on disk when this returns, so it survives the machine too; without, RocksDB's WAL
        in the OS cache makes it survive a crash of the process only."""
        with self.errors("write"):
            self.db.write(wb, self._sync if sync else self._nosync)

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        with self.errors("read"):
            # Rdict reads a list of keys at once (its stubs type only one key)
            values: list[bytes | None] = self.db[keys]  # type: ignore[index, assignment]
        return values

    def get(self, key: bytes) -> bytes | None:
        with self.errors("read"):
            return self.db.get(key)

    def iterate_from(self, start: bytes, stop: bytes) -> tuple[Any, ReadOptions]:
        """A raw iterator at the first key ``>= start``, valid while below ``stop`` (for a
        reader that merges several), and its options.  The bound lets RocksDB stop at
        ``stop`` instead of walking the tombstones past it (half the cut's read time).

        Keep the options alive as long as the iterator: rocksdict's iterator (0.3.29) does
        not hold them, and would read its bound from freed memory."""
        with self.errors("read"):
            options = ReadOptions()
            options.set_iterate_upper_bound(stop)
            it = self.db.iter(options)
            it.seek(start)
        return it, options

    def scan(self, start: bytes, stop: bytes):
        """Key/value pairs with ``start <= key < stop`` in key order."""
        it, _options = self.iterate_from(start, stop)  # (alive as long as the generator)
        with self.errors("read"):
            while it.valid():
                yield it.key(), it.value()
                it.next()

    # -- partitions (see the module docstring) -----------------------------------------------

    def _ranges(self, partition: int) -> list[tuple[bytes, bytes]]:
        return [part_range(bytes([t]), partition) for t in self.tables]

    def export(self, partition: int, folder: str) -> tuple[str | None, int]:
        """Write ``partition``'s keys to an SST file in ``folder``, from one snapshot;
        (its path — None when the partition holds no key —, how many keys)."""
        path = os.path.join(folder, f"partition-{partition}.sst")
        writer: SstFileWriter | None = None
        keys = 0
        with self.errors(f"export of partition {partition}"):
            snapshot = self.db.snapshot()
            for start, stop in self._ranges(partition):
                it = snapshot.iter()
                it.seek(start)
                while it.valid() and (key := it.key()) < stop:
                    if writer is None:
                        writer = SstFileWriter(Options(raw_mode=True))
                        writer.open(path)
                    writer[key] = it.value()
                    keys += 1
                    it.next()
            del snapshot
            if writer is None:
                return None, 0
            writer.finish()
        return path, keys

    def ingest(self, partition: int, path: str | None) -> None:
        """Replace ``partition``'s keys here by those of an SST file :meth:`export` wrote
        (None: by none), atomically for the readers of each step: first the partition's keys
        here are dropped (a half-done earlier ingest among them), then the file is loaded."""
        self.drop(partition)
        if path is not None:
            with self.errors(f"ingest of partition {partition}"):
                self.db.ingest_external_file([path])

    def drop(self, partition: int) -> None:
        """Delete every key of ``partition``, and its fence, in one atomic, durable write."""
        wb = self.batch()
        for start, stop in self._ranges(partition):
            wb.delete_range(start, stop)
        wb.delete(part_key(FENCE_KEY, partition))
        self.write(wb)

    def fence(self, partitions: list[int], frozen: bool = False) -> None:
        """Record, durably, that ``partitions`` are fenced — moving away: their worker starts
        no new work of them —, and ``frozen`` — copied: it takes no more rows of them either.
        A restarted worker reads :meth:`fences` and stays so.  The fence ends with the
        partition's :meth:`drop`."""
        wb = self.batch()
        for p in partitions:
            wb.put(part_key(FENCE_KEY, p), b"1" if frozen else b"")
        self.write(wb)

    def fences(self) -> dict[int, bool]:
        """The partitions fenced here, each with whether it is frozen."""
        n = len(FENCE_KEY)
        return {int.from_bytes(key[n:n + 2], "big"): value == b"1"
                for key, value in self.scan(FENCE_KEY, FENCE_KEY + b"\xff\xff\xff")}

    def count(self, partition: int) -> int:
        """How many keys ``partition`` holds here (a scan: for tests and tools)."""
        return sum(1 for start, stop in self._ranges(partition)
                   for _ in self.scan(start, stop))

    def close(self) -> None:
        self.db.close()
