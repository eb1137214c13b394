"""Typed records: one frozen, slotted dataclass per kind of stream row, whose Arrow schema and
batch codecs are derived from that one declaration (no hand-kept column lists).

A record class subclasses :class:`Record` and is a ``@dataclass(frozen=True, slots=True)``;
each field's Python type names its Arrow type (:data:`ARROW_TYPES`), narrowed where it matters
with ``Annotated`` (:data:`Int32`, :data:`UInt64`); ``X | None`` says the column may hold
nulls (every column is nullable to Arrow, as in the schemas written before these records).
Field order is column order.  Adding a column is adding a field (with a default, so rows
built before it still build) and the code that fills it.

Where rows are made by the hundred a page (links, scoring rows), code fills the columns
directly (:meth:`Record.columns` gives the empty lists, :meth:`Record.batch_of` the batch):
a record object per row there costs more than the rest of the row's work (see
``benchmarks/README.md``, step 22).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Self

import pyarrow as pa

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Int32 = Annotated[int, pa.int32()]
UInt64 = Annotated[int, pa.uint64()]

ARROW_TYPES: dict[Any, pa.DataType] = {
    int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary(),
    bool: pa.bool_(), datetime: UTC_TIMESTAMP,
}


class Layout(typing.NamedTuple):
    """A record class's columns: its schema, names, the fields whose decoded lists must
    become tuples (``tuple[str, ...]`` fields), its empty batch, and a row's values."""

    schema: pa.Schema
    names: tuple[str, ...]
    tuples: frozenset[str]
    empty: pa.RecordBatch
    row: Callable[[Any], tuple[Any, ...]]  # a row's values, in column order


def arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """The Arrow type of a field's type hint, and whether a decoded value becomes a tuple."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return typing.get_args(hint)[1], False
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"a record field is one type or None, not {hint}")
        return arrow_type(args[0])
    if origin in (list, tuple):
        item = typing.get_args(hint)[0]
        return pa.list_(arrow_type(item)[0]), origin is tuple
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return pa.string(), False
    if hint in ARROW_TYPES:
        return ARROW_TYPES[hint], False
    raise TypeError(f"no Arrow type for a record field of type {hint}")


class Record:
    """Base of the record dataclasses (see the module docstring)."""

    __slots__ = ()
    _layouts: ClassVar[dict[type, Layout]] = {}

    @classmethod
    def layout(cls) -> Layout:
        known = Record._layouts.get(cls)
        if known is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
            types_ = [arrow_type(hints[name]) for name in names]
            schema = pa.schema([(n, t) for n, (t, _) in zip(names, types_)])
            every = attrgetter(*names)
            known = Record._layouts[cls] = Layout(
                schema, names, frozenset(n for n, (_, tup) in zip(names, types_) if tup),
                _empty(schema), every if len(names) > 1 else lambda row: (every(row),))
        return known

    @classmethod
    def schema(cls) -> pa.Schema:
        return cls.layout().schema

    @classmethod
    def to_batch(cls, rows: Sequence[Self]) -> pa.RecordBatch:
        """The rows as a record batch of :meth:`schema`."""
        lay = cls.layout()
        if not rows:
            return lay.empty
        # rows to columns in C (a row's values in one call): a third less than a getter a
        # column and row
        return pa.RecordBatch.from_arrays(
            [pa.array(values, type=f.type)
             for values, f in zip(zip(*map(lay.row, rows)), lay.schema)], schema=lay.schema)

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch) -> list[Self]:
        """The rows of a batch of :meth:`schema` (columns found by name)."""
        return [cls(*values) for values in cls.values(batch, *cls.layout().names)]

    @classmethod
    def values(cls, batch: pa.RecordBatch, *names: str) -> Iterator[tuple[Any, ...]]:
        """The fields ``names`` of a batch of :meth:`schema`, row by row, decoded as
        :meth:`from_batch` decodes them: for a stage that reads a few of a record's many
        fields (the strategy runner 9 of a page's 28), where converting the others would cost
        more than its work on the row."""
        lay = cls.layout()
        columns = []
        for name in names:
            if name not in lay.names:
                raise KeyError(f"{cls.__name__} has no field {name!r}")
            values = _values(batch.column(name))
            if name in lay.tuples:
                values = [tuple(v) if v is not None else () for v in values]
            columns.append(values)
        return zip(*columns)

    @classmethod
    def columns(cls) -> dict[str, list[Any]]:
        """Empty column lists, by name, to fill and hand to :meth:`batch_of`."""
        return {name: [] for name in cls.layout().names}

    @classmethod
    def batch_of(cls, columns: Mapping[str, Sequence[Any] | pa.Array]) -> pa.RecordBatch:
        """A record batch of :meth:`schema` from column lists or arrays, every column given."""
        schema = cls.layout().schema
        return pa.RecordBatch.from_arrays(
            [c if isinstance(c := columns[f.name], pa.Array) else pa.array(c, type=f.type)
             for f in schema], schema=schema)

    @classmethod
    def empty(cls) -> pa.RecordBatch:
        """The batch of no rows (made once: 0.17 ms each time otherwise)."""
        return cls.layout().empty


def _values(column: pa.Array) -> list[Any]:
    """A column's Python values.  UTC timestamps from their microseconds: pyarrow's own
    conversion took 4.8 us a value (its time zone looked up each time), this 0.8."""
    if column.type != UTC_TIMESTAMP:
        return column.to_pylist()
    return [None if us is None else _EPOCH + timedelta(microseconds=us)
            for us in column.cast(pa.int64()).to_pylist()]


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema],
                                      schema=schema)

