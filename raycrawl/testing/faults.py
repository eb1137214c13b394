"""A fault-injection hook for tests (see :mod:`raycrawl.faultpoints`): it ends the process at
an armed point, as a kill -9 would.

A test arms a point for one crawl with :func:`arm` before the crawl starts (a file in its
state folder); the first process of that crawl to reach the point renames the file to
``crash-<point>.fired`` and ends, so the point fires once per crawl, and the restarted worker
goes on.  The test session installs the hook in every Ray worker through the environment its
Ray starts with (:data:`ENV_VARS`; a ``runtime_env``'s ``env_vars`` do it too, at a cost in
every worker's start).  Production code never imports this module.
"""

from __future__ import annotations

import os

from raycrawl.faultpoints import ENV

ENV_VARS = {ENV: f"{__name__}:crash_if_armed"}


def arm(state_dir: str, point: str) -> None:
    """Arm ``point`` for the crawl whose state will be in ``state_dir``."""
    os.makedirs(state_dir, exist_ok=True)
    with open(_marker(state_dir, point, "armed"), "w"):
        pass


def fired(state_dir: str, point: str) -> bool:
    return os.path.exists(_marker(state_dir, point, "fired"))


def crash_if_armed(point: str, state_dir: str) -> None:
    """End this process if ``point`` is armed for ``state_dir`` (once: the rename succeeds in
    one process only)."""
    armed = _marker(state_dir, point, "armed")
    if not os.path.exists(armed):
        return
    try:
        os.rename(armed, _marker(state_dir, point, "fired"))
    except FileNotFoundError:  # another process fired it
        return
    os._exit(137)


def _marker(state_dir: str, point: str, kind: str) -> str:
    return os.path.join(state_dir, f"crash-{point}.{kind}")
