"""Fault points: the named steps of the commit protocol, where a fault-injection hook may act.

Production code calls :func:`reach` at each point; with no hook installed (always, outside
fault-injection tests) that costs one test of a module global.  A hook is a callable
``hook(point, state_dir)``.  It is installed in one process by :func:`install`, or in every
process of a Ray job by the environment variable ``RAYCRAWL_FAULT_HOOK=module:callable``
(read at the first point a process reaches: the test session sets it in the environment its
local Ray starts with, which the workers inherit), as ``PYTHONBREAKPOINT`` names the hook of
``breakpoint()``.  raycrawl ships no hook; its tests bring theirs
(``raycrawl.testing.faults``).

Points, in commit order: ``db-worker.cut`` (batch leased), ``fetch-task.start`` (inside the
fetch worker), ``db-worker.fetched`` (spider log received), ``strategy-worker.decided``
(states changed in memory), ``strategy-worker.routed`` (links queued in the DB workers, states
not yet written), ``db-worker.handed-over`` (strategy workers done, batch not yet completed),
``db-worker.completed`` (leases released, rows staged), ``db-worker.output-written`` (Parquet
file in place, not yet recorded in the state).  ``db-worker.start``: a DB worker told to start
cutting batches (a crawl's start, a resume).

Points of a partition's move (``raycrawl.coordinator.rescale``), in its order:
``rescale.fenced`` (the source cuts nothing of them, their batches ended), ``<kind>.exported``
(in the source: frozen and copied), ``rescale.exported``, ``<kind>.adopted`` (in the target:
copy ingested), ``rescale.adopted``, ``rescale.committed`` (the assignment names the target),
``<kind>.dropped`` (in the source), ``rescale.dropped``.  ``rescale.*`` are reached by the
coordinator, the others by the worker moving the partitions (``<kind>``: ``db-worker`` or
``strategy-worker``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

POINTS = ("db-worker.cut", "fetch-task.start", "db-worker.fetched", "strategy-worker.decided",
          "strategy-worker.routed", "db-worker.handed-over", "db-worker.completed",
          "db-worker.output-written")
MOVE_POINTS = ("rescale.fenced", "db-worker.exported", "strategy-worker.exported",
               "rescale.exported", "db-worker.adopted", "strategy-worker.adopted",
               "rescale.adopted", "rescale.committed", "db-worker.dropped",
               "strategy-worker.dropped", "rescale.dropped")
ENV = "RAYCRAWL_FAULT_HOOK"

Hook = Callable[[str, str], None]
_hook: Hook | None = None
_loaded = False


def reach(point: str, state_dir: str) -> None:
    """Tell the installed hook (if any) that this process reached ``point`` of the crawl whose
    state is in ``state_dir``; the hook may end the process."""
    hook = _hook if _loaded else _load()
    if hook is not None:
        hook(point, state_dir)


def install(hook: Hook | None) -> None:
    """Install ``hook`` in this process (None: none, and the environment is not read)."""
    global _hook, _loaded
    _hook, _loaded = hook, True


def _load() -> Hook | None:
    """The hook the environment names.  A name that does not import is logged and ignored:
    a worker never fails for it."""
    spec = os.environ.get(ENV, "")
    hook = None
    if spec:
        module, _, name = spec.partition(":")
        try:
            hook = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            log.error("%s=%r names no hook (%s): fault points stay off", ENV, spec, exc)
    install(hook)
    return hook
