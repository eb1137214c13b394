"""The embedded RocksDB store each worker keeps its shard in, and key encodings.

Keys are bytes with a one-letter table prefix and big-endian integers, so that RocksDB's
byte order is the order the frontier needs.  The tables of a DB worker's store: ``q f l p c d v
n`` (its queue, ``db_worker.queue``), ``k`` (cookies, ``db_worker.shard``), ``r``
(robots.txt), ``a`` (page budget), ``w o`` and ``i j`` (staged and recorded pages and items,
``output.durable``); of a strategy worker's: ``s`` (URL states), ``t T h g`` (traps).  A test
keeps them apart.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

from rocksdict import AccessType, BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from raycrawl.errors import StorageError

__all__ = ["Store", "WriteBatch", "sortable_float", "u64"]

_U64 = struct.Struct(">Q")


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

    def __init__(self, path: str, sync: bool = True) -> None:
        self.path = path
        with self._errors("open"):
            os.makedirs(path, exist_ok=True)
            self.db = Rdict(path, _options(), access_type=AccessType.read_write())
        self._sync, self._nosync = WriteOptions(), WriteOptions()
        self._sync.sync = sync  # False (CrawlConfig.sync_writes): acknowledged in the OS cache

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
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
        with self._errors("write"):
            self.db.write(wb, self._sync if sync else self._nosync)

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        with self._errors("read"):
            # Rdict reads a list of keys at once (its stubs type only one key)
            values: list[bytes | None] = self.db[keys]  # type: ignore[index, assignment]
        return values

    def get(self, key: bytes) -> bytes | None:
        with self._errors("read"):
            return self.db.get(key)

    def scan(self, start: bytes, stop: bytes):
        """Key/value pairs with ``start <= key < stop`` in key order."""
        with self._errors("read"):
            it = self.db.iter()
            it.seek(start)
            while it.valid():
                key = it.key()
                if key >= stop:
                    break
                yield key, it.value()
                it.next()

    def close(self) -> None:
        self.db.close()
