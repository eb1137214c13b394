"""Named crash points of the commit protocol, for fault-injection tests.

Set ``RAYCRAWL_CRASH_AT=<point>`` in the environment of the crawl's workers (for example with
``ray.init(runtime_env={"env_vars": {...}})``) and the first worker process that reaches that
point ends at once, as a kill -9 would end it.  It fires once per crawl state directory: a
marker file (``crash-<point>.fired``) keeps the restarted worker from crashing again.

Points, in commit order: ``db-worker.cut`` (batch leased), ``fetch-task.start`` (inside the
fetch task), ``db-worker.fetched`` (spider log received), ``strategy-worker.decided`` (states
changed in memory), ``strategy-worker.routed`` (links queued in the DB workers, states not yet
written), ``db-worker.handed-over`` (strategy workers done, batch not yet completed),
``db-worker.completed`` (leases released, rows pending), ``db-worker.output-written`` (Parquet
file in place, not yet recorded in the state).
"""

from __future__ import annotations

import os

from .config import CrawlConfig

ENV = "RAYCRAWL_CRASH_AT"


def crash_point(name: str, config: CrawlConfig) -> None:
    """End this process if ``name`` is the armed crash point and it has not fired yet."""
    if os.environ.get(ENV) != name:
        return
    marker = os.path.join(config.state_dir, f"crash-{name}.fired")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(137)
