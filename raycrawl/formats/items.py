"""The ``OUT/items`` Parquet dataset: a spider's items, one row each, one column per field.

A file's columns are ``url`` (the page that yielded the item), then the item's fields in the
order they were first seen; each field's type is inferred from its values in the file, and a
field whose values disagree (a number here, a string there) is a JSON string.  Files written
at different times may infer different types for a field: :func:`read_items` reads them all
into one table by the same rule.  Files are written by :class:`~raycrawl.output.durable.
DurableOutput`, so every item is in exactly one recorded file.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pyarrow as pa

from raycrawl.output.durable import PART_FILE
from raycrawl.storage.location import Location

_JSON = {b"raycrawl": b"json"}  # field metadata of a column of JSON texts


def items_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """The file table of staged item batches (``schemas.ITEMS``)."""
    urls: list[str] = []
    rows: list[dict[str, Any]] = []
    for b in batches:
        urls += b.column("url").to_pylist()
        rows += [msgpack.unpackb(raw) for raw in b.column("item").to_pylist()]
    names = list(dict.fromkeys(k for row in rows for k in row))
    fields, columns = [pa.field("url", pa.string())], [pa.array(urls, pa.string())]
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            column = pa.array(values)
            fields.append(pa.field(name, column.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # the values disagree
            column = _json(values)
            fields.append(pa.field(name, pa.string(), metadata=_JSON))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _json(values: list[Any]) -> pa.Array:
    """Each value as JSON text (None stays null; bytes as text, undecodable bytes escaped)."""
    return pa.array([None if v is None else json.dumps(v, default=_bytes_text)
                     for v in values], pa.string())


def _bytes_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"{type(value).__name__} is not an item value")


def read_items(items_dir: str) -> pa.Table:
    """Every item written so far, as one table (a ``url`` column alone when there is none),
    from a local folder or a URI.

    Fields missing from a file are null there; a field typed differently in two files is read
    as the wider number type when both are numbers, else as JSON strings."""
    where = Location.of(items_dir)
    tables = [where.read_table(name) for name in where.names() if PART_FILE.match(name)]
    if not tables:
        return pa.table({"url": pa.array([], pa.string())})
    schema = unified_schema([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for item tables of ``schemas``: every field, in the order first seen; a
    field's type where they agree (nulls aside), the widest where all are numbers, else JSON
    text."""
    seen: dict[str, set[tuple[pa.DataType, bool]]] = {}
    for schema in schemas:
        for f in schema:
            kinds = seen.setdefault(f.name, set())
            if not pa.types.is_null(f.type):
                kinds.add((f.type, _is_json(f)))
    fields = []
    for name, kinds in seen.items():
        types = {t for t, _ in kinds}
        if not kinds:
            fields.append(pa.field(name, pa.null()))
        elif len(kinds) == 1:
            (t, json_text), = kinds
            fields.append(pa.field(name, t, metadata=_JSON if json_text else None))
        elif all(_is_number(t) for t in types):
            widest = pa.float64() if any(pa.types.is_floating(t) for t in types) else pa.int64()
            fields.append(pa.field(name, widest))
        else:
            fields.append(pa.field(name, pa.string(), metadata=_JSON))
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns: missing ones null, numbers widened, values of a
    JSON field as JSON text."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if _is_json(f) and not _is_json(table.schema.field(f.name)):
            columns.append(_json(column.to_pylist()))
        elif column.type != f.type:
            columns.append(column.cast(f.type))
        else:
            columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _is_json(f: pa.Field) -> bool:
    return bool(f.metadata) and f.metadata.get(b"raycrawl") == b"json"


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)
