"""Arrow record batches between raycrawl's processes travel as Arrow IPC streams.

Every hand-over between raycrawl's actors carries record batches: a spider-feed batch to a
fetch worker, the five batches of each part it streams back, the spider log to a strategy
worker and its scoring log back.  Ray pickles a ``pa.RecordBatch`` as pyarrow reduces it, a
tree of Python objects per column (type, buffers, children): about 200 us of CPU to pickle
and 100 us to unpickle a 600-row links batch on this machine, and still 150 us for an empty
one.  Written as one Arrow IPC stream (schema, dictionaries, the batch) it is 30 and 20 us,
and its body still travels out of band (a ``pa.Buffer`` pickles as a pickle-5 buffer), so
the receiver reads the columns in place.  ``benchmarks/README.md`` (stop 40) has the numbers.

:func:`install` registers the reducer in this process's Ray serialisation (a process that
sends); a process that receives needs nothing but this module importable, as the reduced
form names :func:`read_batch`.  ``actors/__init__.py`` installs it in every actor process.
"""

from __future__ import annotations

import pyarrow as pa
import ray


def write_batch(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch as one Arrow IPC stream (its schema first: any column type, dictionaries
    included; a sliced batch's own rows only)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def read_batch(stream: pa.Buffer) -> pa.RecordBatch:
    """The batch of a :func:`write_batch` stream, its columns read in place."""
    return pa.ipc.open_stream(stream).read_next_batch()


def install() -> None:
    """Pickle record batches as IPC streams in this process's Ray calls and returns."""
    ray.util.register_serializer(pa.RecordBatch, serializer=write_batch,
                                 deserializer=read_batch)
