"""The Ray side of raycrawl: coordinator, strategy and DB workers, fetch workers, handles.

Imported first in every actor process (a class of this package is unpickled there), so it is
where such a process is told, before any other import, that pyarrow has no pandas to look
for (:func:`_pyarrow_without_pandas`), and that record batches travel as Arrow IPC streams
(:mod:`actors.wire`).
"""

from __future__ import annotations

import sys


def _pyarrow_without_pandas() -> None:
    """In a Ray worker process, have pyarrow find no pandas for its own checks.

    ``pa.array`` of a Python list asks whether the list is a pandas object (in pyarrow's
    Cython and in its C++), and the first asking imports pandas when it is installed (it is,
    for ``ray.data``): 0.35 s of CPU and about 35 MiB in every actor process, and every
    collection of Python's cyclic GC walks its objects after.  Each side asks once and
    remembers the answer, so the import is refused for those two questions.  pandas itself
    stays importable: user code (spider callbacks, strategies) imports it as usual, and
    pyarrow's pandas conversions (``to_pandas``) import it then.  Not in a driver (a
    notebook may hand pyarrow pandas objects), nor where pandas is already imported.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    refuse = _Refuse()
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([], type=pa.null())  # pyarrow's Python side tries pandas, once
        pa.array([0])  # and its C++ side (a sequence converted), once
    finally:
        sys.meta_path.remove(refuse)


class _Refuse:
    """An import finder that refuses pandas."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not imported for pyarrow's checks here")
        return None


def _in_actor_process() -> bool:
    import ray

    return bool(ray._private.worker.global_worker.mode == ray.WORKER_MODE)


if _in_actor_process():
    _pyarrow_without_pandas()
    from . import wire

    wire.install()
