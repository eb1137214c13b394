"""Durable output: rows staged with their batch, files counted only once recorded; on a local
folder and on an S3-compatible store (moto's server on loopback), where there is no rename."""

import pyarrow as pa
import pytest

from raycrawl.errors import StorageError
from raycrawl.formats import schemas
from raycrawl.formats.schemas import FetchOutcome, page_rows
from raycrawl.output.durable import DurableOutput, read_pages
from raycrawl.storage.store import Store


@pytest.fixture(params=["local", "s3"])
def pages_at(request, tmp_path):
    """Where the pages go: a local folder, or a prefix of a fresh bucket on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "pages")
    return f"s3://{request.getfixturevalue('s3').bucket()}/crawl/pages"


def rows(urls):
    return page_rows(FetchOutcome.to_batch([
        FetchOutcome(url, i, "h", 0, 0, status=200, content_type="text/html", size_bytes=1,
                     duration_s=0.1, attempts=1, changed=True) for i, url in enumerate(urls)]))


def stage(out, store, urls):
    wb = store.batch()
    done = out.stage(wb, rows(urls))
    store.write(wb)
    out.apply(done)


def test_file_in_place_but_not_recorded_is_written_again_once(tmp_path, pages_at):
    pages = pages_at
    store = Store(str(tmp_path / "db"))
    out = DurableOutput(store, pages, 0, rows_per_file=100, flush_s=60)
    stage(out, store, ["http://a/1", "http://a/2"])
    out.flush()
    stage(out, store, ["http://a/3"])
    out.writer.flush()  # the file is in place... and the worker dies before recording it
    store.close()
    assert sorted(read_pages(pages).column("url").to_pylist()) == [
        "http://a/1", "http://a/2", "http://a/3"]

    store = Store(str(tmp_path / "db"))
    again = DurableOutput(store, pages, 0, rows_per_file=100, flush_s=60)
    assert sorted(read_pages(pages).column("url").to_pylist()) == ["http://a/1", "http://a/2"]
    assert again.rows_written == 2
    again.flush()  # the staged row, still in the store, goes to a new file
    table = read_pages(pages)
    assert sorted(table.column("url").to_pylist()) == ["http://a/1", "http://a/2", "http://a/3"]
    assert table.schema == schemas.PAGES and again.rows_written == 3
    store.close()


def test_staged_rows_survive_a_crash_before_any_file(tmp_path, pages_at):
    pages = pages_at
    store = Store(str(tmp_path / "db"))
    out = DurableOutput(store, pages, 3, rows_per_file=100, flush_s=60)
    stage(out, store, ["http://b/1"])
    store.close()  # dies with the row only staged
    store = Store(str(tmp_path / "db"))
    again = DurableOutput(store, pages, 3, rows_per_file=100, flush_s=60)
    assert again.writer.due() is False and again.writer.buffered == 1
    again.flush()
    assert read_pages(pages).column("url").to_pylist() == ["http://b/1"]
    assert isinstance(read_pages(pages), pa.Table)
    store.close()


class FailingDB:
    """A RocksDB whose writes fail (a full disk) until ``failing`` is turned off."""

    def __init__(self, db):
        self.db, self.failing = db, True

    def write(self, *args):
        if self.failing:
            raise Exception("IO error: No space left on device")  # as rocksdict raises it
        return self.db.write(*args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_a_failed_record_loses_no_row_and_writes_none_twice(tmp_path, pages_at):
    pages = pages_at
    store = Store(str(tmp_path / "db"))
    out = DurableOutput(store, pages, 0, rows_per_file=100, flush_s=60)
    stage(out, store, ["http://a/1", "http://a/2"])
    store.db = failing = FailingDB(store.db)
    with pytest.raises(StorageError, match=r"store .*db: write failed: IO error"):
        out.flush()
    assert read_pages(pages).num_rows == 0  # the unrecorded file is gone
    with pytest.raises(StorageError):
        stage(out, store, ["http://a/3"])  # nothing staged: the batch is not acknowledged
    failing.failing = False
    stage(out, store, ["http://a/3"])
    out.flush()  # the disk has room again: every row once
    assert sorted(read_pages(pages).column("url").to_pylist()) == [
        "http://a/1", "http://a/2", "http://a/3"]
    assert out.rows_written == 3
    store.db = failing.db
    store.close()
