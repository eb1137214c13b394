"""Fetching one spider-feed batch, without Ray: the body of a fetch worker's call.

Expected per-URL failures are values in the spider log's ``error`` column (the kinds of
:class:`~raycrawl.errors.ErrorKind`), never exceptions.  The pieces, from the batch down:
``batch`` (its hosts side by side, their rows handed back in parts), ``hosts`` (one host:
robots.txt, spacing, a pause after Retry-After), ``page`` (one URL, as stages), ``collect``
(the rows gathered into a ``result``), ``bounds`` (how long a batch may take), and what
they use: ``options`` (what a fetch needs of the config),
``client`` (the HTTP session and the one mapping of its errors), ``robots_fetch``,
``cookies``, ``decoding``, ``extract``, ``sitemaps``, ``callbacks`` and ``netguard`` (the
address guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncGenerator

import aiohttp
import pyarrow as pa

from raycrawl import faultpoints
from raycrawl.fetch.callbacks import CallbackRunner
from raycrawl.fetch.client import open_session
from raycrawl.fetch.collect import Collector
from raycrawl.fetch.hosts import HostFetcher
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.page import PageFetcher
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.schemas import FetchRequest
from raycrawl.formats.warc import WarcFiles, repair, warc_place
from raycrawl.render.browser import LocalRenderer, Renderer
from raycrawl.spider import load_spider


async def fetch_hosts(feed: pa.RecordBatch, opts: FetchOptions,
                      session: aiohttp.ClientSession | None = None,
                      limit: RequestLimit | None = None,
                      callbacks: CallbackRunner | None = None,
                      warc: WarcFiles | None = None, renderer: Renderer | None = None
                      ) -> AsyncGenerator[tuple[list[str], FetchResult]]:
    """Fetch every request of a spider-feed batch, its hosts side by side; yields (hosts,
    rows: spider log, robots.txt fetches, items, cookies) as hosts end, every host once (the
    hosts that ended while the last part was taken come out together), so the DB worker
    releases a host when its own fetch ends, not the batch's slowest.  A part's rows are those
    of its hosts and the ended URLs of hosts still running (a host's rows may so come in
    several parts; its cookies come with its last).  Every request yields exactly one page
    row, except those of a host after it answered 429/503 with a Retry-After or whose
    robots.txt could not be read: they are left out (not requested), for the DB worker to
    queue again.

    A host that raises cancels the others, and the error leaves once they are cancelled; so
    does a consumer that stops early: no request runs on behind this generator.

    ``session`` (from :func:`open_session` with the same options) lets batches share
    keep-alive connections; without it, the batch opens and closes its own.  ``limit`` bounds
    the requests in flight over every batch that shares it (default: ``opts.concurrency``
    for this batch alone).  With a spider, ``callbacks`` runs its callbacks (a runner of this
    batch's own when not given).  With ``opts.warc_dir``, every response goes to ``warc``
    (files of this batch's own when not given), synced before its part is yielded.  Pages
    the crawl renders go to ``renderer`` (a browser of this batch's own, started at its first
    render, when not given)."""
    faultpoints.reach("fetch-task.start", opts.state_dir)
    by_host: defaultdict[str, list[FetchRequest]] = defaultdict(list)
    for req in FetchRequest.from_batch(feed):
        by_host[req.host].append(req)
    own_callbacks = callbacks is None and opts.spider is not None
    if own_callbacks:
        callbacks = callback_runner(opts)
    own_warc = warc is None and opts.warc_dir is not None
    if own_warc:
        warc = warc_files(opts, f"fetch-{os.getpid()}-{secrets.token_hex(3)}")
    own_renderer = None
    if renderer is None:
        renderer = own_renderer = local_renderer(opts)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if own_renderer is not None:
                stack.push_async_callback(own_renderer.close)
            if session is None:
                session = await stack.enter_async_context(open_session(opts))
            pages = PageFetcher(session, opts, limit, callbacks, warc, renderer=renderer)
            parts = await stack.enter_async_context(contextlib.aclosing(
                _host_parts(pages, by_host)))
            async for part in parts:
                yield part
    finally:
        if own_callbacks and callbacks is not None:
            callbacks.close()
        if own_warc and warc is not None:
            warc.close()


def warc_files(opts: FetchOptions, prefix: str) -> WarcFiles:
    """The WARC files a fetch worker named ``prefix`` appends to (its partial last record
    from an earlier life cut off first)."""
    if opts.warc_dir is None:
        raise ValueError("the crawl writes no WARC")
    folder, upload = warc_place(opts.warc_dir, opts.state_dir)
    repair(folder, prefix + "-", upload)  # this worker's files of an earlier life
    return WarcFiles(folder, prefix, opts.warc_max_bytes, opts.user_agent, upload)


def local_renderer(opts: FetchOptions) -> LocalRenderer:
    """A browser of this process for the crawl's renders (started at the first)."""
    return LocalRenderer(opts.browser_path, opts.user_agent, AddressGuard(opts.allow_network),
                         opts.browser_restart_pages, opts.render_concurrency)


def callback_runner(opts: FetchOptions) -> CallbackRunner:
    """A runner of the spider's callbacks, with a new instance of the spider."""
    if opts.spider is None:
        raise ValueError("the crawl has no spider")
    spider = load_spider(opts.spider, opts.spider_code, opts.spider_source)()
    return CallbackRunner(spider, opts.callback_timeout_s, opts.max_items_per_page,
                          opts.max_links_per_page)


# An ended host waits at most this long for others to end with it.  Hosts of a batch mostly end
# within a fraction of a second of each other: a batch comes out in one or two parts, and a
# host the batch's slowest would have held for seconds is released after this at most.
HOLD_S = 0.25
# A URL that ended waits at most about this long for its host to end: after it, the rows of the
# hosts still running go out in a part of their own, so a slow page (a drip, a long timeout)
# holds neither its siblings' rows nor the links on them.
EARLY_S = 1.0


class _Hosts:
    """A batch's hosts running side by side (in a task group of their own task, never
    yielded across: a host that fails cancels its siblings, not the consumer of the parts);
    each ended host's rows wait in ``ended`` for the next part."""

    def __init__(self, pages: PageFetcher, by_host: dict[str, list[FetchRequest]]) -> None:
        self.pages, self.by_host = pages, by_host
        self.ended: asyncio.Queue[tuple[str, Collector]] = asyncio.Queue()
        self.running: dict[str, Collector] = {}
        self.task = asyncio.get_running_loop().create_task(self._every_host())

    async def _every_host(self) -> None:
        async with asyncio.TaskGroup() as group:  # one host failing cancels the others
            for host, rows in self.by_host.items():
                group.create_task(self._one_host(host, rows))

    async def _one_host(self, host: str, rows: list[FetchRequest]) -> None:
        out = self.running[host] = Collector()
        await HostFetcher(self.pages, out).host(rows)
        del self.running[host]
        self.ended.put_nowait((host, out))

    async def wait(self, until: float) -> None:
        """Until a host ended (at once if one did), or ``until`` (monotonic) passed."""
        if not self.ended.empty():
            return
        take = asyncio.ensure_future(self.ended.get())
        await asyncio.wait((take, self.task), return_when=asyncio.FIRST_COMPLETED,
                           timeout=max(0.0, until - time.monotonic()))
        if take.done():
            self.ended.put_nowait(take.result())
            return
        take.cancel()
        if self.task.done():  # one raised
            self.task.result()
            raise RuntimeError("a host of the batch ended without its rows")

    def take_ended(self) -> tuple[list[str], Collector]:
        names: list[str] = []
        out = Collector()
        while not self.ended.empty():
            host, rows = self.ended.get_nowait()
            names.append(host)
            out.absorb(rows)
        return names, out

    def take_running(self, out: Collector) -> None:
        """The rows of the URLs that ended on hosts still running, into ``out``."""
        for collector in self.running.values():
            if collector.pages:
                out.absorb(collector.take())

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def _host_parts(pages: PageFetcher, by_host: dict[str, list[FetchRequest]]
                      ) -> AsyncGenerator[tuple[list[str], FetchResult]]:
    """The parts of :func:`fetch_hosts`: a part waits up to ``HOLD_S`` for more hosts to end
    with the first (a part has a cost: a Ray object, Arrow batches, a WARC sync); the rows of
    hosts still running go out after ``EARLY_S`` without a host ending, in a part that names
    no host."""
    hosts = _Hosts(pages, by_host)
    try:
        left = len(by_host)
        drained = time.monotonic()  # when the running hosts' rows last went out
        while left:
            await hosts.wait(drained + EARLY_S)
            if not hosts.ended.empty() and hosts.ended.qsize() < left:  # others may end too
                await asyncio.wait((hosts.task,), timeout=HOLD_S)
            names, out = hosts.take_ended()
            left -= len(names)
            if time.monotonic() - drained >= EARLY_S:
                drained = time.monotonic()
                hosts.take_running(out)
            if names or out.pages:
                yield await _part(names, out, pages.warc)
        await hosts.task
    finally:
        await hosts.close()


async def _part(hosts: list[str], out: Collector, warc: WarcFiles | None
                ) -> tuple[list[str], FetchResult]:
    if warc is not None:  # before the rows exist anywhere else: a row has its records
        await asyncio.to_thread(warc.sync)
    return hosts, out.result()
