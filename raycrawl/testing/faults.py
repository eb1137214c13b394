"""A fault-injection hook for tests (see :mod:`raycrawl.faultpoints`): at an armed point it ends
the process, as a kill -9 would, or holds it (``hang_s``: the process does nothing else
meanwhile, as a worker starved of CPU on a loaded machine).

A test arms a point for one crawl with :func:`arm` before the crawl starts (a file in its state
folder); the first process of that crawl to reach the point renames the file to
``crash-<point>.fired`` and ends (or holds, then goes on), so the point fires once per crawl,
and the restarted worker goes on. The test session installs the hook in every Ray worker
through the environment its Ray starts with (:data:`ENV_VARS`; a ``runtime_env``'s ``env_vars``
do it too, at a cost in every worker's start). Production code never imports this module.
"""

from __future__ import annotations

import os
import time

from raycrawl.faultpoints import ENV

ENV_VARS = {ENV: f"{__name__}:fire_if_armed"}


def arm(state_dir: str, point: str, hang_s: float | None = None) -> None:
    """Arm ``point`` for the crawl whose state will be in ``state_dir``: the process that
    reaches it ends, or with ``hang_s`` holds that long."""
    os.makedirs(state_dir, exist_ok=True)
    with open(_marker(state_dir, point, "armed"), "w") as f:
        f.write("" if hang_s is None else str(hang_s))


def fired(state_dir: str, point: str) -> bool:
    return os.path.exists(_marker(state_dir, point, "fired"))


def fire_if_armed(point: str, state_dir: str) -> None:
    """End (or hold) this process if ``point`` is armed for ``state_dir`` (once: the rename
    succeeds in one process only)."""
    armed = _marker(state_dir, point, "armed")
    if not os.path.exists(armed):
        return
    fired = _marker(state_dir, point, "fired")
    try:
        os.rename(armed, fired)
    except FileNotFoundError:  # another process fired it
        return
    with open(fired) as f:
        hang_s = f.read().strip()
    if not hang_s:
        os._exit(137)
    time.sleep(float(hang_s))  # (blocks its event loop too: no call is answered meanwhile)


def _marker(state_dir: str, point: str, kind: str) -> str:
    return os.path.join(state_dir, f"crash-{point}.{kind}")
