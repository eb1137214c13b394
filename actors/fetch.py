"""The stateless fetch task: a spider-feed batch in; the spider log (pages, links) and the
robots.txt fetches it made out.

A task decides nothing and keeps no crawl state.  What its worker process keeps between tasks is
a cache: one event loop and one HTTP session per fetch options, so that batches reuse keep-alive
connections instead of opening new ones (a third of a batch's requests used to be TCP connects).
"""

from __future__ import annotations

import asyncio
import atexit

import aiohttp
import pyarrow as pa
import ray

from raycrawl.fetching import FetchOptions, fetch_feed, open_session

from .options import FETCH_TASK_OPTIONS

_MAX_SESSIONS = 4  # crawls sharing this worker process, each with its own options
_loop: asyncio.AbstractEventLoop | None = None
_sessions: dict[FetchOptions, aiohttp.ClientSession] = {}


def _session(loop: asyncio.AbstractEventLoop, options: FetchOptions) -> aiohttp.ClientSession:
    session = _sessions.get(options)
    if session is None or session.closed:
        while len(_sessions) >= _MAX_SESSIONS:
            oldest = next(iter(_sessions))
            loop.run_until_complete(_sessions.pop(oldest).close())

        async def opened() -> aiohttp.ClientSession:
            return open_session(options)

        session = _sessions[options] = loop.run_until_complete(opened())
    return session


@ray.remote(**FETCH_TASK_OPTIONS)
def fetch_batch(feed: pa.RecordBatch, options: FetchOptions) -> tuple[
        pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    try:
        return _loop.run_until_complete(fetch_feed(feed, options, _session(_loop, options)))
    except BaseException:  # a bug surfaced, or Ray cancelled the task (its owner died)
        _discard_loop()  # the next task starts afresh: nothing of this one may run into it
        raise


def _discard_loop() -> None:
    """Cancel what is left of the loop's work, close its sessions and the loop; a loop that
    was interrupted mid-run (KeyboardInterrupt from ``ray.cancel``) is left to the GC."""
    global _loop
    loop, _loop = _loop, None
    sessions = list(_sessions.values())
    _sessions.clear()
    if loop is None:
        return
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(
            *pending, *(session.close() for session in sessions), return_exceptions=True))
        loop.close()
    except RuntimeError:
        pass


@atexit.register
def _close_sessions() -> None:
    """Close the cached sessions when the worker process exits normally."""
    _discard_loop()
