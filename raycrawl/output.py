"""The ``OUT/pages`` Parquet dataset: writing it (DB workers) and reading it (users).

Each DB worker writes its own files, named from sequence numbers
(``part-<worker>-<seq>.parquet``), never from URLs.  A file is written under a temporary name
and renamed into place, so readers never see half a file.
"""

from __future__ import annotations

import os
import re
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from . import schemas

_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")


class PagesWriter:
    """Buffers page rows and writes them as Parquet files of up to ``rows_per_file`` rows."""

    def __init__(self, pages_dir: str, worker: int, rows_per_file: int, flush_s: float) -> None:
        os.makedirs(pages_dir, exist_ok=True)
        self.dir = pages_dir
        self.worker = worker
        self.rows_per_file = rows_per_file
        self.flush_s = flush_s
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.rows_written = 0
        self.last_flush = time.monotonic()
        used = [int(m.group(2)) for name in os.listdir(pages_dir)
                if (m := _PART.match(name)) and int(m.group(1)) == worker]
        self.next_seq = max(used, default=-1) + 1

    def add(self, pages: pa.RecordBatch) -> None:
        """Buffer spider-log page rows (only the output columns are kept)."""
        if pages.num_rows:
            self.buffer.append(pa.RecordBatch.from_arrays(
                [pages.column(f.name) for f in schemas.PAGES], schema=schemas.PAGES))
            self.buffered += pages.num_rows
        if self.buffered >= self.rows_per_file:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush when rows have waited ``flush_s`` (so a slow crawl's output shows up)."""
        if self.buffered and time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows to a new file, atomically; durable when this returns."""
        self.last_flush = time.monotonic()
        if not self.buffered:
            return
        table = pa.Table.from_batches(self.buffer, schema=schemas.PAGES)
        name = f"part-{self.worker:03d}-{self.next_seq:06d}.parquet"
        tmp = os.path.join(self.dir, f".{name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.dir, name))
        self.next_seq += 1
        self.rows_written += self.buffered
        self.buffer, self.buffered = [], 0


def read_pages(pages_dir: str) -> pa.Table:
    """Every row written so far (an empty table of the pages schema if there is none)."""
    if not os.path.isdir(pages_dir) or not any(_PART.match(n) for n in os.listdir(pages_dir)):
        return schemas.PAGES.empty_table()
    return ds.dataset(pages_dir, format="parquet", schema=schemas.PAGES,
                      exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"]).to_table()
