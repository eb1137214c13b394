"""Splitting an Arrow batch by the worker that owns each row's partition."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def split_by_owner(batch: pa.RecordBatch, owners: np.ndarray,
                   column: str = "partition") -> dict[int, pa.RecordBatch]:
    """{worker: rows whose ``column`` partition that worker owns}; empty parts are left out."""
    if batch.num_rows == 0:
        return {}
    owner = owners[batch.column(column).to_numpy(zero_copy_only=False)]
    if (owner == owner[0]).all():  # one owner (one worker of the role, mostly): no copy
        return {int(owner[0]): batch}
    result = {}
    for worker in np.unique(owner):
        result[int(worker)] = batch.filter(pa.array(owner == worker))
    return result



def not_owned(batches: Iterable[pa.RecordBatch], owned: Collection[int]) -> list[int]:
    """The partitions of rows in ``batches`` that are not in ``owned``, sorted."""
    found: set[int] = set()
    for batch in batches:
        if batch.num_rows:
            found.update(pc.unique(batch.column("partition")).to_pylist())
    return sorted(p for p in found if p not in owned)
