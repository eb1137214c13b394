"""Running a spider's callbacks in a fetch worker, bounded, on the body already downloaded.

Callbacks are the user's synchronous Python: they run on one thread beside the worker's event
loop (so the worker's other requests go on meanwhile), one at a time, each within
``callback_timeout_s``.  Whatever a callback does — raises, yields something that is neither an
item nor a follow, yields without end, runs too long — ends its page as ``callback-error``
with a one-line detail; it never raises into the worker.  A callback that overruns gets a
``CallbackTimeout`` raised in its thread; one stuck where that cannot reach it (in C code) is
left behind and a fresh thread takes the next callback.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raycrawl.spider import DEFAULT_CALLBACK, Follow, Spider, SpiderResponse

log = logging.getLogger(__name__)

MAX_ITEM_NESTING = 32
TRACEBACKS_LOGGED = 5  # full tracebacks logged per worker; later errors one line in 100
GRACE_S = 1.0  # how long an overrun callback may take to notice its CallbackTimeout


class CallbackTimeout(BaseException):
    """Raised inside a callback's thread when it overran (not an Exception: a bare
    ``except Exception`` in the callback does not swallow it)."""


class CallbackFailed(Exception):
    """What a callback did wrong, as its page's ``error_detail``."""


@dataclass(slots=True)
class Outcome:
    """A callback's result: packed items and follows, or an error detail (then neither)."""

    items: list[bytes] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)
    error: str | None = None


def check_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` if it is an item value (None, bool, int, float, str, bytes, list/tuple, dict
    with string keys, nested), lists for tuples; else :class:`CallbackFailed`."""
    if depth > MAX_ITEM_NESTING:
        raise CallbackFailed(f"item field {where!r} is nested deeper than {MAX_ITEM_NESTING}")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return [check_value(v, where, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CallbackFailed(f"item field {where!r} has a non-string key {k!r}")
            out[k] = check_value(v, f"{where}.{k}", depth + 1)
        return out
    raise CallbackFailed(f"item field {where!r} holds a {type(value).__name__}; items hold "
                         "None, bool, int, float, str, bytes, lists and dicts")


def pack_item(item: Mapping[str, Any]) -> bytes:
    """An item's fields, checked, as msgpack (a field ``url`` is kept as ``item_url``: the
    ``url`` column names the page)."""
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if not isinstance(key, str) or not key:
            raise CallbackFailed(f"item field names must be non-empty strings, not {key!r}")
        fields["item_url" if key == "url" else key] = check_value(value, key)
    try:
        return msgpack.packb(fields)
    except (OverflowError, ValueError) as exc:  # an int beyond 64 bits
        raise CallbackFailed(f"item cannot be stored: {exc}") from None


def collect(result: Any, max_items: int, max_follows: int) -> Outcome:
    """Items and follows from what a callback returned (None, a dict, or an iterable)."""
    out = Outcome()
    if result is None:
        return out
    if isinstance(result, Mapping):
        result = [result]
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        raise CallbackFailed(f"returned a {type(result).__name__}; a callback yields dicts "
                             "and follows")
    for value in result:
        if isinstance(value, Follow):
            if len(out.follows) >= max_follows:
                raise CallbackFailed(f"yielded more than {max_follows} follows")
            out.follows.append(value)
        elif isinstance(value, Mapping):
            if len(out.items) >= max_items:
                raise CallbackFailed(f"yielded more than {max_items} items")
            out.items.append(pack_item(value))
        else:
            raise CallbackFailed(f"yielded a {type(value).__name__}: neither a dict (an item) "
                                 "nor response.follow(...)")
    return out


class _Job:
    """One callback call on the runner's thread; :meth:`interrupt` raises CallbackTimeout in
    it, unless it already ended."""

    def __init__(self, fn: Callable[[], Outcome]) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        self.thread: int | None = None
        self.ended = False

    def run(self) -> Outcome:
        try:
            try:
                with self.lock:
                    if self.ended:  # interrupted before it started
                        raise CallbackTimeout
                    self.thread = threading.get_ident()
                return self.fn()
            finally:
                with self.lock:
                    self.ended = True
        except CallbackTimeout:
            return Outcome(error="timeout")

    def interrupt(self) -> None:
        with self.lock:
            if self.ended:
                return
            self.ended = self.thread is None  # not started: it will not
            if self.thread is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread),
                                                           ctypes.py_object(CallbackTimeout))


class _Thread:
    """One daemon thread that runs jobs in turn (daemon: one stuck in a callback does not keep
    the process from exiting)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[_Job, asyncio.Future[Outcome]] | None] = (
            queue.SimpleQueue())
        threading.Thread(target=self._loop, name="spider-callback", daemon=True).start()

    def submit(self, job: _Job) -> asyncio.Future[Outcome]:
        """The job's outcome, as a future of the running event loop."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.jobs.put((job, future))
        return future

    def _loop(self) -> None:
        while (work := self.jobs.get()) is not None:
            job, future = work
            outcome = job.run()
            try:
                future.get_loop().call_soon_threadsafe(_resolve, future, outcome)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    def stop(self) -> None:
        self.jobs.put(None)


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def callback_of(spider: Spider | type[Spider], name: str) -> Callable[..., Any] | None:
    """The callback ``name`` of a spider (or its class): a public method; None if it has
    none by that name."""
    callback = getattr(spider, name, None)
    return None if name.startswith("_") or not callable(callback) else callback


class CallbackRunner:
    """Calls one spider instance's callbacks, one at a time, each within ``timeout_s``."""

    def __init__(self, spider: Spider, timeout_s: float, max_items: int,
                 max_follows: int) -> None:
        self.spider = spider
        self.timeout_s, self.max_items, self.max_follows = timeout_s, max_items, max_follows
        self.thread = _Thread()
        self.turn = asyncio.Lock()
        self.errors = 0
        self.abandoned = 0  # threads left stuck in a callback

    def _call(self, name: str, response: SpiderResponse) -> Outcome:
        callback = callback_of(self.spider, name)
        if callback is None:
            return Outcome(error=f"the spider has no callback {name!r}")
        try:
            return collect(callback(response), self.max_items, self.max_follows)
        except CallbackFailed as exc:
            return Outcome(error=f"{name}: {exc}")
        except CallbackTimeout:
            raise
        except BaseException as exc:  # the user's code (even sys.exit): ends the page only
            self._log(name, response, exc)
            return Outcome(error=f"{name}: {type(exc).__name__}: {exc}"[:500])

    def _log(self, name: str, response: SpiderResponse, exc: BaseException) -> None:
        self.errors += 1
        if self.errors <= TRACEBACKS_LOGGED:
            log.warning("callback %s raised on %s:\n%s", name, response.url,
                        "".join(traceback.format_exception(exc)))
        elif self.errors % 100 == 0:
            log.warning("callback %s raised on %s (%d callback errors so far): %r", name,
                        response.url, self.errors, exc)

    async def run(self, callback: str | None, response: SpiderResponse) -> Outcome:
        """The outcome of ``callback`` (default ``parse``) on ``response``; never raises."""
        name = callback or DEFAULT_CALLBACK
        job = _Job(lambda: self._call(name, response))
        async with self.turn:
            future = self.thread.submit(job)
            try:
                await asyncio.wait((future,), timeout=self.timeout_s)
            except asyncio.CancelledError:  # its batch was cancelled: free the thread for
                job.interrupt()  # the next callback, which would otherwise wait behind it
                raise
            if future.done():
                outcome = future.result()
            else:
                job.interrupt()
                await asyncio.wait((future,), timeout=GRACE_S)
                if not future.done():  # stuck beyond reach: leave its thread, take a new one
                    self.abandoned += 1
                    log.error("callback %s on %s ignored its timeout; %d callback threads "
                              "abandoned", name, response.url, self.abandoned)
                    self.thread.stop()
                    self.thread = _Thread()
                outcome = Outcome(error="timeout")
        if outcome.error == "timeout":
            outcome = Outcome(error=f"{name}: ran longer than {self.timeout_s:g} s "
                                    "(callback_timeout_s)")
        return outcome

    def close(self) -> None:
        self.thread.stop()
