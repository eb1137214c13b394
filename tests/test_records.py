"""Records: Arrow schemas and codecs derived from one dataclass declaration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from raycrawl.errors import ErrorKind
from raycrawl.formats import schemas
from raycrawl.records import Int32, Record, UInt64


@dataclass(frozen=True, slots=True)
class Row(Record):
    url: str
    fingerprint: UInt64
    depth: Int32
    chain: tuple[str, ...] = ()
    error: ErrorKind | None = None
    at: datetime | None = None
    body: bytes | None = None
    score: float = 1.0
    ok: bool = True


def test_the_schema_comes_from_the_field_types_in_their_order():
    assert Row.schema() == pa.schema([
        ("url", pa.string()), ("fingerprint", pa.uint64()), ("depth", pa.int32()),
        ("chain", pa.list_(pa.string())), ("error", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")), ("body", pa.binary()),
        ("score", pa.float64()), ("ok", pa.bool_())])


def test_rows_round_trip_through_a_batch():
    rows = [Row("http://a/", 2**63 + 1, 3, ("http://b/",), ErrorKind.TIMEOUT,
                datetime(2026, 1, 2, tzinfo=UTC), b"x", 0.5, False),
            Row("http://c/", 7, 0)]
    batch = Row.to_batch(rows)
    assert batch.schema == Row.schema() and batch.num_rows == 2
    back = Row.from_batch(batch)
    assert back == rows  # tuples come back as tuples, enums as their strings (equal)
    assert Row.from_batch(Row.to_batch([])) == [] and Row.to_batch([]) is Row.empty()


def test_some_fields_read_row_by_row_decode_as_the_records_do():
    rows = [Row("http://a/", 2**63 + 1, 3, ("http://b/",), ErrorKind.TIMEOUT,
                datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), b"x", 0.5, False),
            Row("http://c/", 7, 0)]
    batch = Row.to_batch(rows)
    names = ("at", "chain", "url", "error", "ok")
    assert list(Row.values(batch, *names)) == [
        tuple(getattr(r, n) for n in names) for r in Row.from_batch(batch)]
    assert list(Row.values(batch, "chain"))[1] == ((),)  # a tuple field, empty: a tuple
    with pytest.raises(KeyError, match="no field 'hops'"):
        Row.values(batch, "url", "hops")


@dataclass(frozen=True, slots=True)
class One(Record):
    url: str


def test_a_record_of_one_field_round_trips_too():
    batch = One.to_batch([One("a"), One("b")])
    assert batch.column("url").to_pylist() == ["a", "b"]
    assert One.from_batch(batch) == [One("a"), One("b")]


def test_columns_filled_directly_make_the_same_batch():
    cols = Row.columns()
    for name, value in [("url", "u"), ("fingerprint", 1), ("depth", 0), ("chain", []),
                        ("error", None), ("at", None), ("body", None), ("score", 1.0),
                        ("ok", True)]:
        cols[name].append(value)
    assert Row.batch_of(cols).equals(Row.to_batch([Row("u", 1, 0)]))


def test_a_field_with_no_arrow_type_is_refused():
    @dataclass(frozen=True, slots=True)
    class Bad(Record):
        what: dict

    with pytest.raises(TypeError, match="no Arrow type"):
        Bad.schema()


def test_the_stream_schemas_are_their_records():
    assert schemas.SPIDER_FEED == schemas.FetchRequest.schema()
    assert schemas.SPIDER_LOG_PAGES.names[:5] == ["url", "fingerprint", "host", "partition",
                                                  "depth"]
    assert set(schemas.PAGES.names) <= set(schemas.SPIDER_LOG_PAGES.names)  # page_rows selects


def test_timestamps_decode_as_pyarrow_would_to_the_microsecond():
    when = [datetime(2026, 12, 7, 20, 21, 3, 123456, tzinfo=UTC), None,
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC), datetime(2262, 4, 11, tzinfo=UTC)]
    rows = [Row(f"u{i}", i, 0, at=at) for i, at in enumerate(when)]
    batch = Row.to_batch(rows)
    decoded = Row.from_batch(batch)
    assert [r.at for r in decoded] == when == batch.column("at").to_pylist()
    assert all(r.at is None or r.at.tzinfo is not None for r in decoded)
