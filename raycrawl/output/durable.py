"""The ``OUT/pages`` Parquet dataset: writing it (DB workers) and reading it (users).

Each DB worker writes its own files, named from sequence numbers
(``part-<worker>-<seq>.parquet``), never from URLs, into a local folder or an object store
(:class:`~raycrawl.storage.location.Location`).  A file appears whole or not at all: on a disk
it is written under a temporary name and renamed into place, on an object store uploaded in
one piece (there is no rename there).

:class:`DurableOutput` makes the rows crash-safe: a row is stored in the worker's RocksDB in the
same atomic write that completes its batch, moved to a Parquet file later, and a file counts
only once it is recorded in the store, which it is *after* it is whole in the output.  A file
in place but not yet recorded when the worker died is deleted when the worker restarts, and
its rows, still in the store, are written again: no row is lost, none is written twice.
Object stores list what they hold consistently (S3 since 2020), so the restarted worker sees
that file.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from raycrawl.errors import StorageError
from raycrawl.formats import schemas
from raycrawl.storage.location import Location
from raycrawl.storage.store import Store, WriteBatch, read_u64, u64

PART_FILE = re.compile(r"^part-(\d+)-(\d+)\.parquet$")  # part-<worker>-<seq>.parquet


def pages_table(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches, schema=schemas.PAGES)


class PartWriter:
    """Buffers rows and writes them as Parquet files of up to ``rows_per_file`` rows, each
    file's table made by ``to_table`` from the buffered batches."""

    def __init__(self, out_dir: str | Location, worker: int, rows_per_file: int,
                 flush_s: float,
                 to_table: Callable[[list[pa.RecordBatch]], pa.Table] = pages_table) -> None:
        self.dir = Location.of(out_dir) if isinstance(out_dir, str) else out_dir
        self.dir.makedirs()
        self.to_table = to_table
        self.worker = worker
        self.rows_per_file = rows_per_file
        self.flush_s = flush_s
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.next_seq = max((int(PART_FILE.match(n).group(2)) for n in self.files()),  # type: ignore
                            default=-1) + 1

    def files(self) -> list[str]:
        """This worker's part files in the folder."""
        return [name for name in self.dir.names()
                if (m := PART_FILE.match(name)) and int(m.group(1)) == self.worker]

    def add(self, rows: pa.RecordBatch) -> None:
        """Buffer rows (of the schema ``to_table`` reads)."""
        if rows.num_rows:
            self.buffer.append(rows)
            self.buffered += rows.num_rows

    def due(self) -> bool:
        """A file's worth of rows, or rows that waited ``flush_s``."""
        return self.buffered >= self.rows_per_file or (
            self.buffered > 0 and time.monotonic() - self.last_flush >= self.flush_s)

    def flush(self) -> tuple[str, int] | None:
        """Write buffered rows to a new file, atomically and durably; returns the file's name
        and row count (None when nothing was buffered)."""
        self.last_flush = time.monotonic()
        if not self.buffered:
            return None
        name = self.write(self.to_table(self.buffer))
        written = (name, self.buffered)
        self.buffer, self.buffered = [], 0
        return written

    def write(self, table: pa.Table) -> str:
        """Write ``table`` as the next file, atomically and durably; returns its name."""
        name = f"part-{self.worker:03d}-{self.next_seq:06d}.parquet"
        try:  # on an error the rows stay buffered (and staged in the store)
            with self.dir.writing(name) as fh:
                pq.write_table(table, fh, compression="zstd")
        except OSError as exc:  # raised by the Parquet writer
            raise StorageError(f"output {self.dir}: writing {name} failed: {exc}") from None
        self.next_seq += 1
        return name


@dataclass(frozen=True, slots=True)
class Staged:
    """Rows added to a WriteBatch, to :meth:`DurableOutput.apply` once it is written."""

    key: bytes
    rows: pa.RecordBatch


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _from_ipc(raw: bytes) -> list[pa.RecordBatch]:
    return pa.ipc.open_stream(raw).read_all().to_batches()


@dataclass(frozen=True, slots=True)
class Keys:
    """The store keys of one output: ``staged <seq>`` -> rows staged (Arrow IPC),
    ``recorded <file name>`` -> rows in that file (one byte each)."""

    staged: bytes
    recorded: bytes


def _after(prefix: bytes) -> bytes:
    """The first key after every key that starts with the one-byte ``prefix``."""
    return bytes([prefix[0] + 1])


PAGE_KEYS = Keys(b"w", b"o")
ITEM_KEYS = Keys(b"i", b"j")


class DurableOutput:
    """Rows staged in a store with their batch, then moved to recorded Parquet files.

    Keys (:class:`Keys`; ``w``/``o`` for the pages): staged rows, recorded files.
    ``on_file_written`` runs between a file's rename and its recording (a crash point).
    """

    def __init__(self, store: Store, out_dir: str | Location, worker: int, rows_per_file: int,
                 flush_s: float, on_file_written: Callable[[], None] = lambda: None,
                 keys: Keys = PAGE_KEYS,
                 to_table: Callable[[list[pa.RecordBatch]], pa.Table] = pages_table) -> None:
        self.store = store
        self.keys = keys
        self.on_file_written = on_file_written
        self.writer = PartWriter(out_dir, worker, rows_per_file, flush_s, to_table)
        recorded = {key[1:].decode(): int(raw)
                    for key, raw in store.scan(keys.recorded, _after(keys.recorded))}
        for name in self.writer.files():
            if name not in recorded:  # renamed into place, never recorded: written again
                self.writer.dir.delete(name)
        self.rows_written = sum(recorded.values())
        self.staged: list[bytes] = []
        self.next_key = 0
        for key, raw in store.scan(keys.staged, _after(keys.staged)):
            for rows in _from_ipc(raw):
                self.writer.add(rows)
            self.staged.append(key)
            self.next_key = read_u64(key, 1) + 1

    def stage(self, wb: WriteBatch, rows: pa.RecordBatch) -> Staged:
        """Add ``rows`` to ``wb``; once ``wb`` is written, :meth:`apply` the result to buffer
        them for the next file."""
        key = self.keys.staged + u64(self.next_key)
        self.next_key += 1
        wb.put(key, _ipc(rows))
        return Staged(key, rows)

    def apply(self, staged: Staged) -> None:
        """Count rows staged by a write that succeeded."""
        self.staged.append(staged.key)
        self.writer.add(staged.rows)

    def flush_if_due(self) -> None:
        if self.writer.due():
            self.flush()

    def flush(self) -> None:
        """Move the staged rows to a Parquet file, then record the file and drop the staged
        copies in one atomic write.  If the record fails, the file is removed and its rows
        stay staged and buffered: the next flush writes them (:class:`StorageError`)."""
        buffered = list(self.writer.buffer)
        written = self.writer.flush()
        if written is None:
            return
        name, rows = written
        self.on_file_written()
        wb = self.store.batch()
        for key in self.staged:
            wb.delete(key)
        wb.put(self.keys.recorded + name.encode(), str(rows).encode())
        try:
            self.store.write(wb)
        except StorageError:
            with contextlib.suppress(StorageError):
                self.writer.dir.delete(name)
            for batch in buffered:
                self.writer.add(batch)
            raise
        self.staged = []
        self.rows_written += rows

    def recorded(self) -> list[str]:
        """The recorded files, in order."""
        return sorted(key[1:].decode()
                      for key, _ in self.store.scan(self.keys.recorded,
                                                    _after(self.keys.recorded)))

    def rewrite(self, schema: pa.Schema,
                transform: Callable[[pa.Table, pa.Schema], pa.Table]) -> int:
        """Replace each recorded file whose schema is not ``schema`` (read from its footer)
        with a new file of ``transform(its table, schema)``: the new files are written, then
        recorded in place of the old ones in one atomic write, then the old ones removed.
        A crash at any point leaves either set recorded (the other is removed on restart).
        Call with nothing buffered.  Returns how many files were replaced."""
        replaced: list[tuple[str, str, int]] = []
        out = self.writer.dir
        for old in self.recorded():
            if out.read_schema(old).equals(schema, check_metadata=True):
                continue
            table = transform(out.read_table(old), schema)
            replaced.append((old, self.writer.write(table), table.num_rows))
        if not replaced:
            return 0
        wb = self.store.batch()
        for old, new, rows in replaced:
            wb.delete(self.keys.recorded + old.encode())
            wb.put(self.keys.recorded + new.encode(), str(rows).encode())
        self.store.write(wb)
        for old, _, _ in replaced:
            with contextlib.suppress(StorageError):
                out.delete(old)
        return len(replaced)


def read_pages(pages_dir: str | Location) -> pa.Table:
    """Every row written so far (an empty table of the pages schema if there is none), from a
    local folder or a URI."""
    where = Location.of(pages_dir) if isinstance(pages_dir, str) else pages_dir
    if not any(PART_FILE.match(n) for n in where.names()):
        return schemas.PAGES.empty_table()
    # Imported here, not by the workers: pyarrow.dataset imports pandas when it is installed
    # (about 35 MiB and 0.3 s in every process that imports it).
    import pyarrow.dataset as ds

    return ds.dataset(where.root, filesystem=where.fs, format="parquet", schema=schemas.PAGES,
                      exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"]).to_table()
