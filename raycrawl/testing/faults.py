"""Named crash points of the commit protocol, for fault-injection tests.

List points in the config's ``crash_points`` (it travels with the config to every worker and
fetch worker) and the first process that reaches one ends at once, as a kill -9 would end it.
Each point fires once per crawl state directory: a marker file (``crash-<point>.fired``) keeps
the restarted worker from crashing again.  An empty list (the default) costs one tuple test.

Points, in commit order: ``db-worker.cut`` (batch leased), ``fetch-task.start`` (inside the
fetch worker), ``db-worker.fetched`` (spider log received), ``strategy-worker.decided`` (states
changed in memory), ``strategy-worker.routed`` (links queued in the DB workers, states not yet
written), ``db-worker.handed-over`` (strategy workers done, batch not yet completed),
``db-worker.completed`` (leases released, rows staged), ``db-worker.output-written`` (Parquet
file in place, not yet recorded in the state).
"""

from __future__ import annotations

import os

POINTS = ("db-worker.cut", "fetch-task.start", "db-worker.fetched", "strategy-worker.decided",
          "strategy-worker.routed", "db-worker.handed-over", "db-worker.completed",
          "db-worker.output-written")


def crash_point(name: str, armed: tuple[str, ...], state_dir: str) -> None:
    """End this process if ``name`` is armed and has not fired yet for ``state_dir``."""
    if name not in armed:
        return
    marker = os.path.join(state_dir, f"crash-{name}.fired")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(137)
