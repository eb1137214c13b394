"""Fetching one spider-feed batch: aiohttp downloads, politeness per host, link extraction.

This is the body of the stateless fetch task (``actors.fetch``), runnable without Ray.  Expected
per-URL failures are values in the spider log's ``error`` column, never exceptions:

=================  ==============================================================
``timeout``        connect, read or total timeout
``connection``     refused, reset, unreachable, DNS failure
``blocked-address``  the address guard refused the host's address
``too-large``      the body exceeded ``max_body_bytes`` (status kept)
``bad-response``   the server broke HTTP (bad status line, bad encoding, ...)
``invalid-url``    the URL could not be requested
``bad-redirect``   a 3xx whose Location cannot be resolved (status kept)
=================  ==============================================================
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pyarrow as pa

from . import schemas
from .config import CrawlConfig
from .errors import InvalidURL
from .extract import extract_links, is_html
from .netguard import AddressGuard, BlockedAddress, GuardedResolver
from .urls import url_info


@dataclass(frozen=True)
class FetchOptions:
    """The part of the config a fetch task needs (small, shipped with every batch)."""

    concurrency: int
    per_host: int
    delay_s: float
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    max_body_bytes: int
    max_links_per_page: int
    max_url_length: int
    partitions: int
    user_agent: str
    allow_network: tuple[str, ...]

    @classmethod
    def from_config(cls, c: CrawlConfig) -> FetchOptions:
        return cls(c.fetch_concurrency, c.per_host, c.delay_s, c.connect_timeout_s,
                   c.read_timeout_s, c.total_timeout_s, c.max_body_bytes, c.max_links_per_page,
                   c.max_url_length, c.partitions, c.user_agent, c.allow_network)


def error_kind(exc: BaseException) -> str:
    """The one place where aiohttp's and the OS's errors become error kinds."""
    if isinstance(exc, BlockedAddress):
        return "blocked-address"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "blocked-address" if isinstance(exc.os_error, BlockedAddress) else "connection"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, (aiohttp.InvalidURL, InvalidURL)):
        return "invalid-url"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError,
                        aiohttp.ServerDisconnectedError, UnicodeError)):
        return "bad-response"
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return "connection"
    raise exc  # not a per-URL failure: a bug that must surface


class _Collector:
    """Accumulates spider-log rows column by column."""

    def __init__(self) -> None:
        self.pages: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_PAGES}
        self.links: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_LINKS}

    def page(self, row: dict[str, Any], status: int | None, ctype: str | None,
             error: str | None, fetched_at: datetime, size: int, duration: float,
             links: int) -> None:
        p = self.pages
        for name in ("url", "fingerprint", "host", "partition", "depth"):
            p[name].append(row[name])
        p["status"].append(status)
        p["content_type"].append(ctype)
        p["error"].append(error)
        p["fetched_at"].append(fetched_at)
        p["size_bytes"].append(size)
        p["duration_s"].append(duration)
        p["links_count"].append(links)

    def link_rows(self, parent: dict[str, Any], targets: list[str], depth: int,
                  opts: FetchOptions) -> int:
        seen: set[int] = set()
        lk = self.links
        for target in targets:
            if len(seen) >= opts.max_links_per_page:
                break
            if len(target) > opts.max_url_length:
                continue
            try:
                info = url_info(target, opts.partitions)
            except InvalidURL:
                continue
            if info.fingerprint in seen or len(info.url) > opts.max_url_length:
                continue
            seen.add(info.fingerprint)
            lk["parent_url"].append(parent["url"])
            lk["parent_depth"].append(parent["depth"])
            lk["url"].append(info.url)
            lk["fingerprint"].append(info.fingerprint)
            lk["host"].append(info.host)
            lk["partition"].append(info.partition)
            lk["depth"].append(depth)
        return len(seen)

    def result(self) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        return (schemas.batch(schemas.SPIDER_LOG_PAGES, self.pages),
                schemas.batch(schemas.SPIDER_LOG_LINKS, self.links))


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The (decompressed) body, stopping once it exceeds ``limit``; (body, too_large)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        return b"", True
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def _fetch_one(session: aiohttp.ClientSession, row: dict[str, Any], opts: FetchOptions,
                     guard: AddressGuard, out: _Collector) -> None:
    fetched_at = datetime.now(UTC)
    started = time.monotonic()
    status: int | None = None
    ctype: str | None = None
    error: str | None = None
    size = 0
    targets: list[str] = []
    link_depth = row["depth"] + 1
    refusal = guard.check_host_literal(row["host"])
    if refusal is not None:
        error = "blocked-address"
    else:
        try:
            async with session.get(row["url"], allow_redirects=False) as resp:
                status = resp.status
                ctype = resp.headers.get("Content-Type")
                body, too_large = await _read_body(resp, opts.max_body_bytes)
                size = len(body)
                if too_large:
                    error = "too-large"
                elif 300 <= status < 400 and "Location" in resp.headers:
                    # A redirect is a frontier event: its target is routed, deduplicated and
                    # fetched like a link found at the same depth.
                    try:
                        targets = [urljoin(str(resp.url), resp.headers["Location"])]
                    except ValueError:  # a Location no URL parser accepts
                        error = "bad-redirect"
                    link_depth = row["depth"]
                elif is_html(ctype):
                    targets = extract_links(str(resp.url), body, ctype)
        except Exception as exc:  # mapped to a kind, or re-raised, by error_kind
            error = error_kind(exc)
    links = out.link_rows(row, targets, link_depth, opts) if targets else 0
    out.page(row, status, ctype, error, fetched_at, size, time.monotonic() - started, links)


async def _crawl_host(session: aiohttp.ClientSession, rows: list[dict[str, Any]],
                      opts: FetchOptions, guard: AddressGuard, out: _Collector,
                      limit: asyncio.Semaphore) -> None:
    """Fetch one host's URLs: at most ``per_host`` at once, starts ``delay_s`` apart."""
    pending = list(reversed(rows))
    next_start = 0.0

    async def worker() -> None:
        nonlocal next_start
        while pending:
            row = pending.pop()
            now = time.monotonic()
            wait = next_start - now
            next_start = max(now, next_start) + opts.delay_s
            if wait > 0:
                await asyncio.sleep(wait)
            async with limit:
                await _fetch_one(session, row, opts, guard, out)

    await asyncio.gather(*(worker() for _ in range(min(opts.per_host, len(rows)))))


async def fetch_feed(feed: pa.RecordBatch, opts: FetchOptions) -> tuple[pa.RecordBatch,
                                                                        pa.RecordBatch]:
    """Fetch every request of a spider-feed batch; returns the spider log (pages, links).

    Every request yields exactly one page row, fetched or failed.
    """
    by_host: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in feed.to_pylist():
        by_host[row["host"]].append(row)
    guard = AddressGuard(opts.allow_network)
    out = _Collector()
    timeout = aiohttp.ClientTimeout(total=opts.total_timeout_s or None,
                                    sock_connect=opts.connect_timeout_s or None,
                                    sock_read=opts.read_timeout_s or None)
    connector = aiohttp.TCPConnector(limit=opts.concurrency, resolver=GuardedResolver(guard),
                                     ttl_dns_cache=60)
    limit = asyncio.Semaphore(opts.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"User-Agent": opts.user_agent},
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        await asyncio.gather(*(_crawl_host(session, rows, opts, guard, out, limit)
                               for rows in by_host.values()))
    return out.result()
