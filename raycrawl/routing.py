"""Splitting an Arrow batch by the worker that owns each row's partition."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def split_by_owner(batch: pa.RecordBatch, owners: np.ndarray,
                   column: str = "partition") -> dict[int, pa.RecordBatch]:
    """{worker: rows whose ``column`` partition that worker owns}; empty parts are left out."""
    if batch.num_rows == 0:
        return {}
    owner = owners[batch.column(column).to_numpy(zero_copy_only=False)]
    result = {}
    for worker in np.unique(owner):
        result[int(worker)] = batch.filter(pa.array(owner == worker))
    return result

