"""What one DB worker writes for the user: ``OUT/pages`` rows, a spider's ``OUT/items``, and the
upkeep of its fetch workers' ``OUT/warc`` files.

Rows and items are staged in the same WriteBatch as the batch they belong to (see
:class:`~raycrawl.output.durable.DurableOutput`), so both are exactly once; items only for the
pages whose row is output (a URL completed before gets neither again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from raycrawl.config import CrawlConfig
from raycrawl.formats import schemas
from raycrawl.formats.items import conform, items_table, unified_schema
from raycrawl.formats.warc import repair, warc_place
from raycrawl.output.durable import ITEM_KEYS, DurableOutput, Staged
from raycrawl.storage.store import Store, WriteBatch


@dataclass(frozen=True, slots=True)
class StagedOutput:
    """What a batch added to its WriteBatch, to :meth:`ShardOutput.apply` once written."""

    pages: Staged | None
    items: Staged | None


class ShardOutput:
    """The output files of DB worker ``index``; ``on_file_written`` runs between a file's
    rename and its recording (a crash point)."""

    def __init__(self, store: Store, config: CrawlConfig, index: int,
                 on_file_written: Callable[[], None]) -> None:
        self.config, self.index = config, index
        self.pages = DurableOutput(store, config.pages_dir, index, config.output_rows_per_file,
                                   config.output_flush_s, on_file_written=on_file_written)
        self.items = DurableOutput(store, config.items_dir, index, config.output_rows_per_file,
                                   config.output_flush_s, on_file_written=on_file_written,
                                   keys=ITEM_KEYS, to_table=items_table) if config.spider else None

    def stage(self, wb: WriteBatch, rows: pa.RecordBatch, fresh: pa.Array,
              items: pa.RecordBatch | None) -> StagedOutput:
        """Add the spider-log ``rows`` to output and the ``items`` of the pages in ``fresh``
        (fingerprints) to ``wb``."""
        pages = self.pages.stage(wb, schemas.page_rows(rows)) if rows.num_rows else None
        staged_items = None
        if items is not None and items.num_rows and self.items is not None:
            items = items.filter(pc.is_in(items.column("fingerprint"), value_set=fresh))
            staged_items = self.items.stage(wb, items) if items.num_rows else None
        return StagedOutput(pages, staged_items)

    def apply(self, staged: StagedOutput) -> int:
        """Count what a written WriteBatch staged; returns the items."""
        if staged.pages is not None:
            self.pages.apply(staged.pages)
        if staged.items is not None and self.items is not None:
            self.items.apply(staged.items)
            return staged.items.rows.num_rows
        return 0

    @property
    def rows_written(self) -> int:
        return self.pages.rows_written

    @property
    def items_total(self) -> int:
        """Items committed (in recorded files, or staged for the next), durable."""
        return self.items.rows_written + self.items.writer.buffered if self.items else 0

    @property
    def items_written(self) -> int:
        return self.items.rows_written if self.items else 0

    def flush_if_due(self) -> None:
        self.pages.flush_if_due()
        if self.items is not None:
            self.items.flush_if_due()

    def flush(self) -> None:
        """Write buffered rows (and items) to files now."""
        self.pages.flush()
        if self.items is not None:
            self.items.flush()

    def item_schema(self) -> pa.Schema | None:
        """One schema for the recorded item files (see ``formats.items.unified_schema``)."""
        if self.items is None:
            return None
        out = self.items.writer.dir
        return unified_schema([out.read_schema(name) for name in self.items.recorded()])

    def conform_items(self, schema: pa.Schema) -> int:
        """Rewrite the recorded item files whose schema is not ``schema`` (call after a flush,
        with nothing buffered); returns how many."""
        if self.items is None:
            return 0
        return self.items.rewrite(schema, conform)

    def repair_warc(self, upload: bool = True) -> None:
        """Cut the partial last record that a killed fetch worker of this DB worker left (call
        when none of them is writing: at start, after a drain).  With an ``OUT`` elsewhere
        than this disk, the spooled files are then uploaded — only where none of its fetch
        workers may still close its own (at start, not after a drain: ``upload=False``)."""
        if self.config.warc:
            folder, to = warc_place(self.config.warc_dir, self.config.state_dir)
            repair(folder, f"db-worker-{self.index}-", to if upload else None)
