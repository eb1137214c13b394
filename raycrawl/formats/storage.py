"""The embedded RocksDB store each worker keeps its shard in, and key encodings.

Keys are bytes with a one-letter table prefix and big-endian integers, so that RocksDB's
byte order is the order the frontier needs.
"""

from __future__ import annotations

import os
import struct

from rocksdict import AccessType, BlockBasedOptions, Options, Rdict, WriteBatch

__all__ = ["Store", "WriteBatch", "sortable_float", "u64"]

_U64 = struct.Struct(">Q")


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
    """One RocksDB database in ``path``; writes go through atomic :class:`WriteBatch` es."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.db = Rdict(path, _options(), access_type=AccessType.read_write())

    def batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, wb: WriteBatch) -> None:
        """Apply ``wb`` atomically (RocksDB's WAL makes it durable across a process crash)."""
        self.db.write(wb)

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        # Rdict reads a list of keys at once (its stubs type only one key)
        values: list[bytes | None] = self.db[keys]  # type: ignore[index, assignment]
        return values

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, start: bytes, stop: bytes):
        """Key/value pairs with ``start <= key < stop`` in key order."""
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
