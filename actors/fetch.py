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
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    try:
        return _loop.run_until_complete(fetch_feed(feed, options, _session(_loop, options)))
    except BaseException:  # a bug surfaced: no coroutine of this batch may run into the next
        _cancel_leftovers(_loop)
        raise


@atexit.register
def _close_sessions() -> None:
    """Close the cached sessions when the worker process exits normally."""
    if _loop is not None and not _loop.is_closed():
        for session in _sessions.values():
            _loop.run_until_complete(session.close())
        _sessions.clear()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
