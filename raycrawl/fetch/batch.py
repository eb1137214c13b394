"""Fetching one spider-feed batch, without Ray: the body of a fetch worker's call.

Expected per-URL failures are values in the spider log's ``error`` column (the kinds of
:class:`~raycrawl.errors.ErrorKind`), never exceptions.  The pieces: ``options`` (what a fetch
needs of the config), ``client`` (the HTTP session and the one mapping of its errors),
``robots_fetch``, ``hosts`` (per-host politeness, redirects, links), ``decoding``, ``extract``
and ``netguard`` (the address guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import aiohttp
import pyarrow as pa

from raycrawl import faultpoints
from raycrawl.errors import ErrorKind, InvalidURL
from raycrawl.fetch.callbacks import CallbackRunner
from raycrawl.fetch.client import open_session
from raycrawl.fetch.hosts import HostFetcher, Link, Seen
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.robots_fetch import MAX_ROBOTS_REDIRECTS
from raycrawl.formats import schemas
from raycrawl.formats.warc import WarcFiles, repair
from raycrawl.spider import load_spider
from raycrawl.urls import request_fingerprint, url_info


class FetchResult(NamedTuple):
    """What a spider-feed batch gave: the spider log (pages, links), the robots.txt fetches,
    the items the spider's callbacks yielded and the cookies its hosts hold now (a crawl that
    keeps them)."""

    pages: pa.RecordBatch
    links: pa.RecordBatch
    robots: pa.RecordBatch
    items: pa.RecordBatch
    cookies: pa.RecordBatch

    @classmethod
    def empty(cls) -> FetchResult:
        return cls(*(schemas.empty(s) for s in _RESULT_SCHEMAS))

    @classmethod
    def concat(cls, parts: list[FetchResult]) -> FetchResult:
        if not parts:
            return cls.empty()
        return cls(*(pa.concat_batches([p[i] for p in parts]) for i in range(len(cls._fields))))


_RESULT_SCHEMAS = (schemas.SPIDER_LOG_PAGES, schemas.SPIDER_LOG_LINKS, schemas.ROBOTS,
                   schemas.ITEMS, schemas.COOKIES)
# The column names, read once: a collector is made per host, and walking a pyarrow schema's
# fields costs more than the lists (3% of a fetch worker when done per host).
_RESULT_NAMES = tuple(tuple(schema.names) for schema in _RESULT_SCHEMAS)
_FOLLOW_COLUMNS = ("callback", "meta", "priority", "method", "headers", "body", "age_s",
                   "modified_at")


class Collector:
    """Accumulates spider-log rows column by column."""

    def __init__(self) -> None:
        self.columns: list[dict[str, list[Any]]] = [{name: [] for name in names}
                                                    for names in _RESULT_NAMES]
        self.pages, self.links, self.robots, self.items, self.cookies = self.columns
        self.plain_links = 0  # links before the first follow: their follow columns are null

    def page(self, row: dict[str, Any], status: int | None, ctype: str | None,
             error: ErrorKind | None, fetched_at: datetime, size: int = 0, duration: float = 0.0,
             links: int = 0, retry_after: float | None = None, detail: str | None = None,
             items: list[bytes] | None = None, out_of_scope: int = 0,
             warc: tuple[str, int] | None = None, seen: Seen | None = None) -> None:
        p = self.pages
        for name in schemas.IDENTITY:
            p[name].append(row[name])
        p["attempts"].append(row["attempts"] + (0 if error is not None and not error.fetched
                                                else 1))
        p["status"].append(status)
        p["content_type"].append(ctype)
        p["error"].append(error)
        p["fetched_at"].append(fetched_at)
        p["size_bytes"].append(size)
        p["duration_s"].append(duration)
        p["links_count"].append(links)
        p["retry_after_s"].append(retry_after)
        p["error_detail"].append(detail)
        p["items_count"].append(len(items) if items else 0)
        p["out_of_scope"].append(out_of_scope)
        p["warc_file"].append(warc[0] if warc else None)
        p["warc_offset"].append(warc[1] if warc else None)
        if seen is None:  # no answer: what the last visit saw still stands
            seen = Seen(row["visit"] == 1 or None, row["etag"], row["last_modified"],
                        row["digest"])
        p["changed"].append(seen.changed)
        p["etag"].append(seen.etag)
        p["last_modified"].append(seen.last_modified)
        p["digest"].append(seen.digest)
        if items:
            n = len(items)
            self.items["url"] += [row["url"]] * n
            self.items["fingerprint"] += [row["fingerprint"]] * n
            self.items["item"] += items

    def link_rows(self, parent: dict[str, Any], targets: Sequence[str | Link], depth: int,
                  chain: list[str], opts: FetchOptions, limit: int | None = None
                  ) -> tuple[int, int]:
        """Add a page's links (canonical, valid, within the length limit and the scope, each
        once, at most ``limit``, default ``max_links_per_page``); returns how many, and how
        many were out of scope.  ``targets`` are URLs or :class:`Link` s (a spider's follows
        come first)."""
        limit = limit or opts.max_links_per_page
        seen: set[int] = set()
        infos = []
        follows: list[Link | None] = []  # per link kept: the follow it came from
        scope = None if opts.scope.everything else opts.scope
        out_of_scope = 0
        for target in targets:
            link, url = (target, target.url) if isinstance(target, Link) else (None, target)
            if len(url) > opts.max_url_length:
                continue
            try:
                info = url_info(url, opts.partitions)
            except InvalidURL:
                continue
            if link is not None and (link.method or link.body):  # a POST: its own request
                info = dataclasses.replace(info, fingerprint=request_fingerprint(
                    info.url, link.method or "GET", link.body))
            if info.fingerprint in seen or len(info.url) > opts.max_url_length:
                continue
            seen.add(info.fingerprint)
            if scope is not None and not scope.allows(info.url, info.host):
                out_of_scope += 1
                continue
            infos.append(info)
            follows.append(link)
            if len(infos) >= limit:
                break
        n, lk = len(infos), self.links
        if any(follows):  # a spider's: the follow columns, null for the links before
            for name in _FOLLOW_COLUMNS:
                lk[name] += [None] * self.plain_links
                lk[name] += [getattr(x, name) if x else None for x in follows]
            self.plain_links = 0
        else:
            self.plain_links += n
        lk["parent_url"] += [parent["url"]] * n
        lk["parent_depth"] += [parent["depth"]] * n
        lk["url"] += [i.url for i in infos]
        lk["fingerprint"] += [i.fingerprint for i in infos]
        lk["host"] += [i.host for i in infos]
        lk["partition"] += [i.partition for i in infos]
        lk["depth"] += [depth] * n
        host, hops = parent["host"], parent["hops"] or 0
        lk["hops"] += [hops if i.host == host else hops + 1 for i in infos]
        lk["redirect_chain"] += [chain] * n
        return n, out_of_scope

    def cookie_row(self, host: str, cookies: bytes) -> None:
        self.cookies["host"].append(host)
        self.cookies["cookies"].append(cookies)

    def robots_row(self, origin: str, host: str, status: int | None, body: bytes,
                   error: ErrorKind | None) -> None:
        r = self.robots
        r["origin"].append(origin)
        r["host"].append(host)
        r["status"].append(status)
        r["body"].append(body)
        r["error"].append(error)

    def absorb(self, other: Collector) -> None:
        """Append ``other``'s rows after this one's."""
        if any(other.links[name] for name in _FOLLOW_COLUMNS):
            self._pad_follows()
            other._pad_follows()
        for mine, theirs in zip(self.columns, other.columns):
            for name, values in theirs.items():
                mine[name] += values
        self.plain_links += other.plain_links

    def take(self) -> Collector:
        """The rows so far, in a collector of their own; this one starts empty again."""
        taken = Collector()
        taken.columns, self.columns = self.columns, taken.columns
        taken.plain_links, self.plain_links = self.plain_links, 0
        for c in (taken, self):
            c.pages, c.links, c.robots, c.items, c.cookies = c.columns
        return taken

    def _pad_follows(self) -> None:
        """Give the links before the first follow their null follow columns."""
        if self.plain_links:
            for name in _FOLLOW_COLUMNS:
                self.links[name] += [None] * self.plain_links
            self.plain_links = 0

    def result(self) -> FetchResult:
        links: dict[str, Any] = dict(self.links)
        for name in _FOLLOW_COLUMNS:  # without follows (no spider): all null, built at once
            links[name] = (links[name] + [None] * self.plain_links if links[name] else
                           pa.nulls(len(links["url"]), schemas.SPIDER_LOG_LINKS.field(name).type))
        columns = [self.pages, links, self.robots, self.items, self.cookies]
        return FetchResult(*(schemas.batch(schema, cols)
                             for schema, cols in zip(_RESULT_SCHEMAS, columns)))


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
    by_host: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in feed.to_pylist():
        by_host[row["host"]].append(row)
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
                      by_host: dict[str, list[dict[str, Any]]],
                      limit: RequestLimit | None, callbacks: CallbackRunner | None,
                      warc: WarcFiles | None
                      ) -> AsyncGenerator[tuple[list[str], FetchResult]]:
    """The hosts run in a task group of their own task (never yielded across: a host that
    fails cancels its siblings, not this generator's consumer); each ended host's rows wait in
    ``ended`` until the next part, which waits up to ``HOLD_S`` for more hosts to end with it
    (a part has a cost: a Ray object, Arrow batches, a WARC sync).  The rows of hosts still
    running go out after ``EARLY_S`` without a host ending, in a part that names no host."""
    limit = limit or RequestLimit(opts.concurrency, opts.per_ip)
    guard = AddressGuard(opts.allow_network)
    ended: asyncio.Queue[tuple[str, Collector]] = asyncio.Queue()
    running: dict[str, Collector] = {}

    async def one_host(host: str, rows: list[dict[str, Any]]) -> None:
        out = running[host] = Collector()
        await HostFetcher(session, opts, out, limit, callbacks, warc, guard).host(rows)
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
                    if collector.pages["url"]:
                        out.absorb(collector.take())
            if names or out.pages["url"]:
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
