"""Fetching one spider-feed batch: aiohttp downloads, politeness per host, robots.txt, links.

This is the body of the stateless fetch task (``actors.fetch``), runnable without Ray.  Expected
per-URL failures are values in the spider log's ``error`` column, never exceptions:

======================  ===========================================================
``timeout``             connect, read or total timeout (a slow drip is cut off)
``connection``          refused, reset, unreachable, DNS failure
``blocked-address``     the address guard refused the host's address
``too-large``           the (decoded) body exceeded ``max_body_bytes`` (status kept)
``bad-response``        the server broke HTTP or sent an encoding we do not decode
``bad-redirect``        a 3xx whose Location cannot be resolved (status kept)
``redirect-loop``       a 3xx back to a URL of its own redirect chain (status kept)
``too-many-redirects``  a redirect chain longer than ``max_redirects`` (status kept)
``robots``              robots.txt disallows the URL; it was not fetched
``robots-unavailable``  robots.txt answered 5xx or not at all; retried later
``invalid-url``         the URL could not be requested
======================  ===========================================================
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pyarrow as pa
import yarl

from raycrawl.config import CrawlConfig
from raycrawl.errors import InvalidURL
from raycrawl.fetch.decoding import ACCEPT_ENCODING, BodyDecoder, UnsupportedEncoding
from raycrawl.fetch.extract import extract_links, is_html
from raycrawl.fetch.netguard import AddressGuard, BlockedAddress, GuardedResolver
from raycrawl.formats import schemas
from raycrawl.frontier.robots import (
    MAX_ROBOTS_BYTES,
    RobotsKind,
    RobotsPolicy,
    agent_token,
    origin_of,
)
from raycrawl.testing.faults import crash_point
from raycrawl.urls import url_info

MAX_ROBOTS_REDIRECTS = 5  # RFC 9309
KEEPALIVE_S = 5.0  # idle connections kept between batches (below common server timeouts)
_NOT_TRIED = frozenset({"robots", "robots-unavailable", "blocked-address"})


@dataclass(frozen=True)
class FetchOptions:
    """The part of the config a fetch task needs (small, shipped with every batch)."""

    concurrency: int
    per_host: int
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    max_body_bytes: int
    max_links_per_page: int
    max_url_length: int
    max_redirects: int
    partitions: int
    user_agent: str
    allow_network: tuple[str, ...]
    crash_points: tuple[str, ...] = ()
    state_dir: str = ""
    link_parser: str = "lexbor"

    @classmethod
    def from_config(cls, c: CrawlConfig) -> FetchOptions:
        return cls(c.fetch_concurrency, c.per_host, c.connect_timeout_s, c.read_timeout_s,
                   c.total_timeout_s, c.max_body_bytes, c.max_links_per_page, c.max_url_length,
                   c.max_redirects, c.partitions, c.user_agent, c.allow_network,
                   c.crash_points, c.state_dir, c.link_parser)


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
                        aiohttp.ServerDisconnectedError, UnicodeError, UnsupportedEncoding,
                        zlib.error)):
        return "bad-response"
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return "connection"
    raise exc  # not a per-URL failure: a bug that must surface


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class _Collector:
    """Accumulates spider-log rows column by column."""

    def __init__(self) -> None:
        self.pages: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_PAGES}
        self.links: dict[str, list[Any]] = {f.name: [] for f in schemas.SPIDER_LOG_LINKS}
        self.robots: dict[str, list[Any]] = {f.name: [] for f in schemas.ROBOTS}

    def page(self, row: dict[str, Any], status: int | None, ctype: str | None,
             error: str | None, fetched_at: datetime, size: int = 0, duration: float = 0.0,
             links: int = 0, retry_after: float | None = None) -> None:
        p = self.pages
        for name in ("url", "fingerprint", "host", "partition", "depth", "redirect_chain"):
            p[name].append(row[name])
        p["attempts"].append(row["attempts"] + (0 if error in _NOT_TRIED else 1))
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
                   error: str | None) -> None:
        r = self.robots
        r["origin"].append(origin)
        r["host"].append(host)
        r["status"].append(status)
        r["body"].append(body)
        r["error"].append(error)

    def result(self) -> tuple[pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
        return (schemas.batch(schemas.SPIDER_LOG_PAGES, self.pages),
                schemas.batch(schemas.SPIDER_LOG_LINKS, self.links),
                schemas.batch(schemas.ROBOTS, self.robots))


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The decoded body, stopping once it exceeds ``limit``; returns (body, too_large)."""
    declared = resp.content_length
    if declared is not None and declared > limit and not resp.headers.get("Content-Encoding"):
        return b"", True
    decoder = BodyDecoder(resp.headers.get("Content-Encoding"), limit)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += decoder.feed(chunk)
        if decoder.over_limit:
            return bytes(body[:limit]), True
    return bytes(body), False


class _Fetcher:
    """One batch's session, guard and collector."""

    def __init__(self, session: aiohttp.ClientSession, opts: FetchOptions, out: _Collector,
                 limit: asyncio.Semaphore | None) -> None:
        self.session, self.opts, self.out = session, opts, out
        self.guard = AddressGuard(opts.allow_network)
        self.limit = limit or asyncio.Semaphore(opts.concurrency)
        self.agent = agent_token(opts.user_agent)

    async def robots(self, origin: str, host: str) -> RobotsPolicy:
        """Fetch ``origin``'s robots.txt and record it.  Redirects are followed by hand, at
        most 5 (RFC 9309), each hop through the address guard; after the fifth the last 3xx
        stands, which reads as "unavailable": allow all."""
        status: int | None = None
        body = b""
        error: str | None = None
        url = origin + "/robots.txt"
        for _ in range(MAX_ROBOTS_REDIRECTS + 1):
            if self.guard.check_host_literal(yarl.URL(url).raw_host or "") is not None:
                status, error = None, "blocked-address"
                break
            try:
                async with self.limit, self.session.get(url, allow_redirects=False) as resp:
                    status = resp.status
                    location = resp.headers.get("Location")
                    if 300 <= status < 400 and location:
                        try:
                            url = urljoin(url, location)
                        except ValueError:  # unusable Location: the 3xx stands
                            break
                        continue
                    if 200 <= status < 300:
                        body, _ = await _read_body(resp, MAX_ROBOTS_BYTES)
            except Exception as exc:  # mapped to a kind, or re-raised, by error_kind
                status, error = None, error_kind(exc)
            break
        if error == "blocked-address":  # the pages will be refused the same way; no robots
            return RobotsPolicy(RobotsKind.ALLOW_ALL, "", 0.0)
        self.out.robots_row(origin, host, status, body, error)
        return RobotsPolicy.from_fetch(status, body, time.time(), ttl_s=0.0, retry_s=0.0)

    async def page(self, row: dict[str, Any]) -> None:
        opts = self.opts
        fetched_at = datetime.now(UTC)
        started = time.monotonic()
        status: int | None = None
        ctype: str | None = None
        error: str | None = None
        retry_after: float | None = None
        size = 0
        targets: list[str] = []
        link_depth, link_chain = row["depth"] + 1, []
        if self.guard.check_host_literal(row["host"]) is not None:
            error = "blocked-address"
        else:
            try:
                async with self.limit, self.session.get(row["url"], allow_redirects=False) as resp:
                    status = resp.status
                    ctype = resp.headers.get("Content-Type")
                    if status in (429, 503):
                        retry_after = retry_after_s(resp.headers.get("Retry-After"), fetched_at)
                    if 300 <= status < 400 and "Location" in resp.headers:
                        error, targets = self._redirect(row, resp.headers["Location"])
                        link_depth, link_chain = row["depth"], [*row["redirect_chain"], row["url"]]
                    else:
                        body, too_large = await _read_body(resp, opts.max_body_bytes)
                        size = len(body)
                        if too_large:
                            error = "too-large"
                        elif is_html(ctype) and status < 300:
                            targets = extract_links(str(resp.url), body, ctype, opts.link_parser)
            except Exception as exc:  # mapped to a kind, or re-raised, by error_kind
                error = error_kind(exc)
        links = self.out.link_rows(row, targets, link_depth, link_chain, opts) if targets else 0
        self.out.page(row, status, ctype, error, fetched_at, size, time.monotonic() - started,
                      links, retry_after)

    def _redirect(self, row: dict[str, Any], location: str) -> tuple[str | None, list[str]]:
        """A redirect is a frontier event: its target is routed, deduplicated and fetched like
        a link found at the same depth, carrying the chain that led to it."""
        try:
            target = url_info(urljoin(row["url"], location), self.opts.partitions).url
        except (ValueError, InvalidURL):
            return "bad-redirect", []
        if target == row["url"] or target in row["redirect_chain"]:
            return "redirect-loop", []
        if len(row["redirect_chain"]) + 1 > self.opts.max_redirects:
            return "too-many-redirects", []
        return None, [target]

    async def host(self, rows: list[dict[str, Any]]) -> None:
        """One host's URLs: robots.txt first if asked, then at most ``per_host`` at once,
        request starts at least the host's delay apart (with ``per_host`` 1, the delay runs
        from the end of the previous request)."""
        delay = max(r["delay_s"] for r in rows)
        allowed = []
        policies: dict[str, RobotsPolicy] = {}
        for row in rows:
            if row["robots_needed"]:
                origin = origin_of(row["url"])
                if origin not in policies:
                    policies[origin] = await self.robots(origin, row["host"])
                policy = policies[origin]
                delay = max(delay, policy.crawl_delay_s(self.agent))
                if policy.kind is RobotsKind.UNAVAILABLE:
                    self.out.page(row, None, None, "robots-unavailable", datetime.now(UTC))
                    continue
                if not policy.allows(row["url"], self.agent):
                    self.out.page(row, None, None, "robots", datetime.now(UTC))
                    continue
            allowed.append(row)
        pending = list(reversed(allowed))
        next_start = time.monotonic() + (delay if policies else 0.0)

        async def worker() -> None:
            nonlocal next_start
            while pending:
                row = pending.pop()
                now = time.monotonic()
                wait = next_start - now
                next_start = max(now, next_start) + delay
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.page(row)
                if self.opts.per_host == 1:
                    # One at a time: count the delay from the end of the request, so the
                    # server sees arrivals ``delay`` apart whatever the network jitter.
                    next_start = max(next_start, time.monotonic() + delay)

        await asyncio.gather(*(worker() for _ in range(min(self.opts.per_host, len(allowed)))))


def open_session(opts: FetchOptions) -> aiohttp.ClientSession:
    """The HTTP client of fetch tasks: timeouts, the address guard at resolution time, no
    cookies, no automatic decompression (``BodyDecoder`` caps it).  Call inside a running
    event loop; the session may serve many batches of the same options."""
    timeout = aiohttp.ClientTimeout(total=opts.total_timeout_s or None,
                                    sock_connect=opts.connect_timeout_s or None,
                                    sock_read=opts.read_timeout_s or None)
    guard = AddressGuard(opts.allow_network)
    connector = aiohttp.TCPConnector(limit=opts.concurrency, resolver=GuardedResolver(guard),
                                     ttl_dns_cache=60, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False,
        headers={"User-Agent": opts.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
        cookie_jar=aiohttp.DummyCookieJar())


async def fetch_feed(feed: pa.RecordBatch, opts: FetchOptions,
                     session: aiohttp.ClientSession | None = None,
                     limit: asyncio.Semaphore | None = None) -> tuple[
        pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    """Fetch every request of a spider-feed batch; returns the spider log (pages, links) and
    the robots.txt fetches made.  Every request yields exactly one page row.

    ``session`` (from :func:`open_session` with the same options) lets batches share
    keep-alive connections; without it, the batch opens and closes its own.  ``limit`` bounds
    the requests in flight over every batch that shares it (default: ``opts.concurrency``
    for this batch alone)."""
    crash_point("fetch-task.start", opts.crash_points, opts.state_dir)
    by_host: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in feed.to_pylist():
        by_host[row["host"]].append(row)
    out = _Collector()
    if session is None:
        async with open_session(opts) as own:
            await _fetch_hosts(own, opts, out, by_host, limit)
    else:
        await _fetch_hosts(session, opts, out, by_host, limit)
    return out.result()


async def _fetch_hosts(session: aiohttp.ClientSession, opts: FetchOptions, out: _Collector,
                       by_host: dict[str, list[dict[str, Any]]],
                       limit: asyncio.Semaphore | None) -> None:
    fetcher = _Fetcher(session, opts, out, limit)
    await asyncio.gather(*(fetcher.host(rows) for rows in by_host.values()))
