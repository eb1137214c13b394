"""Fetching one spider-feed batch, without Ray: the body of a fetch worker's call.

Expected per-URL failures are values in the spider log's ``error`` column (the kinds of
:class:`~raycrawl.errors.ErrorKind`), never exceptions.  The pieces: ``options`` (what a fetch
needs of the config), ``client`` (the HTTP session and the one mapping of its errors),
``robots_fetch``, ``hosts`` (per-host politeness, redirects, links), ``decoding``, ``extract``
and ``netguard`` (the address guard).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from typing import Any, NamedTuple

import aiohttp
import pyarrow as pa

from raycrawl.errors import ErrorKind, InvalidURL
from raycrawl.fetch.client import open_session
from raycrawl.fetch.hosts import HostFetcher
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.robots_fetch import MAX_ROBOTS_REDIRECTS
from raycrawl.formats import schemas
from raycrawl.testing.faults import crash_point
from raycrawl.urls import url_info


class FetchResult(NamedTuple):
    """What a spider-feed batch gave: the spider log (pages, links) and robots.txt fetches."""

    pages: pa.RecordBatch
    links: pa.RecordBatch
    robots: pa.RecordBatch

    @classmethod
    def empty(cls) -> FetchResult:
        return cls(schemas.empty(schemas.SPIDER_LOG_PAGES), schemas.empty(schemas.SPIDER_LOG_LINKS),
                   schemas.empty(schemas.ROBOTS))

    @classmethod
    def concat(cls, parts: list[FetchResult]) -> FetchResult:
        if not parts:
            return cls.empty()
        return cls(*(pa.concat_batches([p[i] for p in parts]) for i in range(3)))


class Collector:
    """Accumulates spider-log rows column by column."""

    def __init__(self) -> None:
        self.pages: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_PAGES}
        self.links: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_LINKS}
        self.robots: dict[str, list[Any]] = {f.name: [] for f in schemas.ROBOTS}

    def page(self, row: dict[str, Any], status: int | None, ctype: str | None,
             error: ErrorKind | None, fetched_at: datetime, size: int = 0, duration: float = 0.0,
             links: int = 0, retry_after: float | None = None) -> None:
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

    def link_rows(self, parent: dict[str, Any], targets: list[str], depth: int,
                  chain: list[str], opts: FetchOptions) -> int:
        """Add a page's links (canonical, valid, within the length limit, each once, at most
        ``max_links_per_page``); returns how many."""
        seen: set[int] = set()
        infos = []
        for target in targets:
            if len(target) > opts.max_url_length:
                continue
            try:
                info = url_info(target, opts.partitions)
            except InvalidURL:
                continue
            if info.fingerprint in seen or len(info.url) > opts.max_url_length:
                continue
            seen.add(info.fingerprint)
            infos.append(info)
            if len(infos) >= opts.max_links_per_page:
                break
        n, lk = len(infos), self.links
        lk["parent_url"] += [parent["url"]] * n
        lk["parent_depth"] += [parent["depth"]] * n
        lk["url"] += [i.url for i in infos]
        lk["fingerprint"] += [i.fingerprint for i in infos]
        lk["host"] += [i.host for i in infos]
        lk["partition"] += [i.partition for i in infos]
        lk["depth"] += [depth] * n
        lk["redirect_chain"] += [chain] * n
        return n

    def robots_row(self, origin: str, host: str, status: int | None, body: bytes,
                   error: ErrorKind | None) -> None:
        r = self.robots
        r["origin"].append(origin)
        r["host"].append(host)
        r["status"].append(status)
        r["body"].append(body)
        r["error"].append(error)

    def result(self) -> FetchResult:
        return FetchResult(schemas.batch(schemas.SPIDER_LOG_PAGES, self.pages),
                           schemas.batch(schemas.SPIDER_LOG_LINKS, self.links),
                           schemas.batch(schemas.ROBOTS, self.robots))


def feed_bound_s(feed: pa.RecordBatch, opts: FetchOptions) -> float | None:
    """How long fetching ``feed`` can take at most: its hosts run side by side, each host's
    URLs one after another, each request within ``total_timeout_s`` plus its host's delay,
    after up to six robots.txt requests.  None when requests have no total timeout."""
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
    return max(per_host.values())


async def fetch_feed(feed: pa.RecordBatch, opts: FetchOptions,
                     session: aiohttp.ClientSession | None = None,
                     limit: asyncio.Semaphore | None = None) -> FetchResult:
    """Fetch every request of a spider-feed batch; returns the spider log (pages, links) and
    the robots.txt fetches made.  Every request yields exactly one page row, except those of a
    host after it answered 429/503 with a Retry-After: they are left out (not requested), for
    the DB worker to queue again.

    ``session`` (from :func:`open_session` with the same options) lets batches share
    keep-alive connections; without it, the batch opens and closes its own.  ``limit`` bounds
    the requests in flight over every batch that shares it (default: ``opts.concurrency``
    for this batch alone)."""
    crash_point("fetch-task.start", opts.crash_points, opts.state_dir)
    by_host: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in feed.to_pylist():
        by_host[row["host"]].append(row)
    out = Collector()
    if session is None:
        async with open_session(opts) as own:
            await _fetch_hosts(own, opts, out, by_host, limit)
    else:
        await _fetch_hosts(session, opts, out, by_host, limit)
    return out.result()


async def _fetch_hosts(session: aiohttp.ClientSession, opts: FetchOptions, out: Collector,
                       by_host: dict[str, list[dict[str, Any]]],
                       limit: asyncio.Semaphore | None) -> None:
    fetcher = HostFetcher(session, opts, out, limit)
    async with asyncio.TaskGroup() as group:  # one host failing cancels the others
        for rows in by_host.values():
            group.create_task(fetcher.host(rows))
