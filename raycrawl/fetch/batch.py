"""Fetching one spider-feed batch, without Ray: the body of a fetch worker's call.

Expected per-URL failures are values in the spider log's ``error`` column (the kinds of
:class:`~raycrawl.errors.ErrorKind`), never exceptions.  The pieces, from the batch down:
``batch`` (its hosts side by side, their rows handed back in parts), ``hosts`` (one host:
robots.txt, spacing, a pause after Retry-After), ``page`` (one URL, as stages), ``collect``
(the rows gathered), and what they use: ``options`` (what a fetch needs of the config),
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
from raycrawl.fetch.collect import Collector, FetchResult
from raycrawl.fetch.hosts import HostFetcher
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.page import PageFetcher
from raycrawl.fetch.robots_fetch import MAX_ROBOTS_REDIRECTS
from raycrawl.formats.schemas import FetchRequest
from raycrawl.formats.warc import WarcFiles, repair
from raycrawl.spider import load_spider


def feed_bound_s(feed: pa.RecordBatch, opts: FetchOptions) -> float | None:
    """How long fetching ``feed`` can take at most: its hosts run side by side, each host's
    URLs one after another, each request within ``total_timeout_s`` plus its host's delay,
    after up to six robots.txt requests; with a spider, plus every URL's callback at its
    bound, in turn (a worker runs one callback at a time).  None when requests have no total
    timeout."""
    if not opts.total_timeout_s or feed.num_rows == 0:
        return None
    per_host: dict[str, float] = defaultdict(float)
    robots = MAX_ROBOTS_REDIRECTS + 1
    for host, delay, needed in zip(feed.column("host").to_pylist(),
                                   feed.column("delay_s").to_pylist(),
                                   feed.column("robots_needed").to_pylist()):
        if needed and host not in per_host:
            per_host[host] += robots * opts.total_timeout_s + delay
        per_host[host] += opts.total_timeout_s + delay
    callbacks = 0.0 if opts.spider is None else feed.num_rows * (opts.callback_timeout_s + 1.0)
    # With per_ip, hosts on one address take turns: all of them, at worst.
    hosts = sum(per_host.values()) if opts.per_ip is not None else max(per_host.values())
    return hosts + callbacks


async def fetch_hosts(feed: pa.RecordBatch, opts: FetchOptions,
                      session: aiohttp.ClientSession | None = None,
                      limit: RequestLimit | None = None,
                      callbacks: CallbackRunner | None = None,
                      warc: WarcFiles | None = None
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
    (files of this batch's own when not given), synced before its part is yielded."""
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
    try:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(open_session(opts))
            parts = await stack.enter_async_context(contextlib.aclosing(
                _host_parts(session, opts, by_host, limit, callbacks, warc)))
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
    repair(opts.warc_dir, prefix + "-")
    return WarcFiles(opts.warc_dir, prefix, opts.warc_max_bytes, opts.user_agent)


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


async def _host_parts(session: aiohttp.ClientSession, opts: FetchOptions,
                      by_host: dict[str, list[FetchRequest]],
                      limit: RequestLimit | None, callbacks: CallbackRunner | None,
                      warc: WarcFiles | None
                      ) -> AsyncGenerator[tuple[list[str], FetchResult]]:
    """The hosts run in a task group of their own task (never yielded across: a host that
    fails cancels its siblings, not this generator's consumer); each ended host's rows wait in
    ``ended`` until the next part, which waits up to ``HOLD_S`` for more hosts to end with it
    (a part has a cost: a Ray object, Arrow batches, a WARC sync).  The rows of hosts still
    running go out after ``EARLY_S`` without a host ending, in a part that names no host."""
    pages = PageFetcher(session, opts, limit, callbacks, warc)
    ended: asyncio.Queue[tuple[str, Collector]] = asyncio.Queue()
    running: dict[str, Collector] = {}

    async def one_host(host: str, rows: list[FetchRequest]) -> None:
        out = running[host] = Collector()
        await HostFetcher(pages, out).host(rows)
        del running[host]
        ended.put_nowait((host, out))

    async def every_host() -> None:
        async with asyncio.TaskGroup() as group:  # one host failing cancels the others
            for host, rows in by_host.items():
                group.create_task(one_host(host, rows))

    hosts = asyncio.get_running_loop().create_task(every_host())
    try:
        left = len(by_host)
        drained = time.monotonic()  # when the running hosts' rows last went out
        while left:
            if ended.empty():
                take = asyncio.ensure_future(ended.get())
                await asyncio.wait((take, hosts), return_when=asyncio.FIRST_COMPLETED,
                                   timeout=max(0.0, drained + EARLY_S - time.monotonic()))
                if take.done():
                    ended.put_nowait(take.result())
                else:  # EARLY_S passed with no host ending, or the hosts ended without it
                    take.cancel()
                    if hosts.done():  # one raised
                        hosts.result()
                        raise RuntimeError("a host of the batch ended without its rows")
            if not ended.empty() and ended.qsize() < left:  # others may end with this part
                await asyncio.wait((hosts,), timeout=HOLD_S)
            names: list[str] = []
            out = Collector()
            while not ended.empty():
                host, rows = ended.get_nowait()
                names.append(host)
                out.absorb(rows)
            left -= len(names)
            if time.monotonic() - drained >= EARLY_S:  # the URLs of running hosts that ended
                drained = time.monotonic()
                for collector in running.values():
                    if collector.pages:
                        out.absorb(collector.take())
            if names or out.pages:
                yield await _part(names, out, warc)
        await hosts
    finally:
        if not hosts.done():
            hosts.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hosts


async def _part(hosts: list[str], out: Collector, warc: WarcFiles | None
                ) -> tuple[list[str], FetchResult]:
    if warc is not None:  # before the rows exist anywhere else: a row has its records
        await asyncio.to_thread(warc.sync)
    return hosts, out.result()
