"""One batch's hosts fetched politely: robots.txt first, per-host spacing, redirects, links."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin

import aiohttp
import msgpack
from yarl import URL

from raycrawl.errors import ErrorKind, InvalidURL
from raycrawl.fetch import sitemaps
from raycrawl.fetch.callbacks import CallbackRunner
from raycrawl.fetch.client import error_kind, read_body, retry_after_s
from raycrawl.fetch.extract import extract_links, is_html
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.robots_fetch import fetch_robots
from raycrawl.fetch.sitemaps import SITEMAP
from raycrawl.formats.entry import pack_meta, unpack_meta
from raycrawl.formats.warc import IDENTICAL, NOT_MODIFIED, WarcFiles
from raycrawl.frontier.robots import RobotsKind, RobotsPolicy, agent_token, origin_of
from raycrawl.spider import Follow, SpiderResponse
from raycrawl.urls import url_info

if TYPE_CHECKING:
    from raycrawl.fetch.batch import Collector


MAX_COOKIES = 100  # cookies kept per host (a hostile server may set any number)


def load_cookies(host: str, raw: bytes | None) -> aiohttp.CookieJar:
    """A host's cookie jar from its stored Set-Cookie lines (``dump_cookies``)."""
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: hosts that are IP addresses keep cookies
    for line in msgpack.unpackb(raw) if raw else []:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(line)
        except CookieError:  # stored by an older version of the parser: dropped
            continue
        jar.update_cookies(cookie, URL.build(scheme="http", host=host))
    return jar


def dump_cookies(jar: aiohttp.CookieJar) -> bytes:
    """The jar's cookies as Set-Cookie lines (msgpack), at most ``MAX_COOKIES``."""
    return msgpack.packb([m.OutputString() for m in list(jar)[-MAX_COOKIES:]])


def _cookie_header(jar: aiohttp.CookieJar, url: str) -> str:
    return "; ".join(f"{k}={m.value}" for k, m in jar.filter_cookies(URL(url)).items())


class Seen(NamedTuple):
    """What a fetch saw of its page, for the next visit: changed since the last one (None: no
    answer to tell), the validators and the body's digest."""

    changed: bool | None
    etag: str | None
    last_modified: str | None
    digest: bytes | None


class Link(NamedTuple):
    """A link to follow: a target found on a page (callback etc. None) or a spider's follow."""

    url: str
    callback: str | None = None
    meta: bytes | None = None
    priority: float | None = None
    method: str | None = None  # None: GET
    headers: bytes | None = None  # msgpack map
    body: bytes | None = None
    age_s: float | None = None  # revisit interval
    modified_at: float | None = None  # when the page last changed (a sitemap's <lastmod>)


def _follow_link(f: Follow) -> Link:
    return Link(f.url, f.callback, pack_meta(dict(f.meta or {})), f.priority,
                None if f.method == "GET" else f.method, pack_meta(dict(f.headers or {})),
                f.body, f.age_s)


def conditional_headers(row: dict[str, Any]) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from the last visit's validators."""
    headers = {}
    if row["etag"]:
        headers["If-None-Match"] = row["etag"]
    if row["last_modified"]:
        headers["If-Modified-Since"] = row["last_modified"]
    return headers


def _read_sitemap(body: bytes) -> tuple[ErrorKind | None, list[sitemaps.Listed]]:
    try:
        return None, sitemaps.parse(body)
    except sitemaps.BadSitemap:
        return ErrorKind.BAD_SITEMAP, []


class HostFetcher:
    """Fetches one batch's hosts into its collector: per-host politeness, redirects, links."""

    def __init__(self, session: aiohttp.ClientSession, opts: FetchOptions, out: Collector,
                 limit: RequestLimit | None, callbacks: CallbackRunner | None = None,
                 warc: WarcFiles | None = None, guard: AddressGuard | None = None) -> None:
        self.session, self.opts, self.out = session, opts, out
        self.warc = warc
        self.callbacks = callbacks
        self.handle_status = frozenset(callbacks.spider.handle_status) if callbacks else frozenset()
        self.follow_links = callbacks is None or callbacks.spider.follow_links
        self.guard = guard or AddressGuard(opts.allow_network)
        self.limit = limit or RequestLimit(opts.concurrency, opts.per_ip)
        self.agent = agent_token(opts.user_agent)

    async def robots(self, origin: str, host: str) -> RobotsPolicy:
        """Fetch ``origin``'s robots.txt, record the fetch and return its policy."""
        status, body, error = await fetch_robots(self.session, self.guard, self.limit, origin,
                                                 self.opts.robots_timeout_s or None)
        if error is ErrorKind.BLOCKED_ADDRESS:  # the pages will be refused the same way
            return RobotsPolicy(RobotsKind.ALLOW_ALL, "", 0.0)
        self.out.robots_row(origin, host, status, body, error)
        return RobotsPolicy.from_fetch(status, body, time.time(), ttl_s=0.0, retry_s=0.0)

    async def page(self, row: dict[str, Any], jar: aiohttp.CookieJar | None = None
                   ) -> float | None:
        """Fetch one URL into the collector (with the host's cookies in ``jar``, which takes
        the ones the response sets); returns the seconds of a 429/503 Retry-After."""
        opts = self.opts
        fetched_at = datetime.now(UTC)
        started = time.monotonic()
        status: int | None = None
        ctype: str | None = None
        error: ErrorKind | None = None
        retry_after: float | None = None
        size = 0
        targets: Sequence[str | Link] = []
        link_depth, link_chain = row["depth"] + 1, []
        parsed: SpiderResponse | None = None
        archived: tuple[str, int] | None = None
        resp: aiohttp.ClientResponse | None = None
        body, truncated = b"", "unspecified"  # what the WARC record holds of the body
        seen: Seen | None = None
        body_digest: bytes | None = None
        listed: list[sitemaps.Listed] = []
        if self.guard.check_host_literal(row["host"]) is not None:
            error = ErrorKind.BLOCKED_ADDRESS
        else:
            try:
                headers = unpack_meta(row["headers"])
                if row["visit"] > 1:
                    headers.update(conditional_headers(row))
                if jar is not None and (cookie := _cookie_header(jar, row["url"])):
                    headers["Cookie"] = cookie
                async with self.limit.slot(row["host"]):
                    # Sent now: a revisit is due an interval after this, not after the wait.
                    fetched_at, started = datetime.now(UTC), time.monotonic()
                    async with self.session.request(
                            row["method"] or "GET", row["url"], headers=headers or None,
                            data=row["body"], allow_redirects=False) as resp:
                        status = resp.status
                        if jar is not None:
                            jar.update_cookies(resp.cookies, resp.url)
                        ctype = resp.headers.get("Content-Type")
                        if status in (429, 503):
                            retry_after = retry_after_s(resp.headers.get("Retry-After"), fetched_at)
                        if status == 304 and row["visit"] > 1:  # not modified since the last visit
                            seen = Seen(False, resp.headers.get("ETag") or row["etag"],
                                        resp.headers.get("Last-Modified") or row["last_modified"],
                                        row["digest"])
                        elif 300 <= status < 400 and "Location" in resp.headers:
                            location = resp.headers["Location"]
                            seen = self._seen(row, resp, location.encode("utf-8", "replace"))
                            if seen.changed:  # else its target is known already
                                error, targets = self._redirect(row, location, status)
                            link_depth = row["depth"]
                            link_chain = [*row["redirect_chain"], row["url"]]
                        else:
                            sitemap = row["callback"] == SITEMAP
                            body, too_large = await read_body(resp, max(
                                opts.max_body_bytes, sitemaps.MAX_BYTES if sitemap else 0))
                            truncated = "length" if too_large else ""
                            size = len(body)
                            seen = self._seen(row, resp, body)
                            body_digest = seen.digest
                            if too_large:
                                error = ErrorKind.TOO_LARGE
                            elif sitemap:
                                if seen.changed and status < 300:
                                    error, listed = _read_sitemap(body)
                            elif seen.changed:  # an unchanged page's links and items are known
                                if self.follow_links and is_html(ctype) and status < 300:
                                    targets = extract_links(str(resp.url), body, ctype,
                                                            opts.link_parser)
                                if self.callbacks is not None and (
                                        200 <= status < 300 or status in self.handle_status):
                                    parsed = SpiderResponse(str(resp.url), status, resp.headers,
                                                            body, unpack_meta(row["meta"]),
                                                            row["depth"], ctype, row["visit"])
            except Exception as exc:  # mapped to a kind, or re-raised, by error_kind
                error = error_kind(exc)
        if self.warc is not None and resp is not None and status is not None:
            # On the event loop: 0.2 ms a 50 KB page; a thread per record cost more in
            # hand-offs and GIL waits than it saved (benchmarks/README.md, steps 17, 19).
            archived = self.warc.write(
                row["url"], resp.method, list(resp.request_info.headers.items()), status,
                resp.reason or "", list(resp.headers.items()), body, truncated,
                row["body"] or b"", digest=body_digest,
                revisit=None if seen is None or seen.changed else (
                    NOT_MODIFIED if status == 304 else IDENTICAL))
        detail, items = None, None
        if parsed is not None and self.callbacks is not None:
            outcome = await self.callbacks.run(row["callback"], parsed)
            if outcome.error is not None:
                error, detail, targets = ErrorKind.CALLBACK_ERROR, outcome.error, []
            else:
                items = outcome.items
                targets = [*map(_follow_link, outcome.follows), *targets]
        links, out_of_scope = (self.out.link_rows(row, targets, link_depth, link_chain, opts)
                               if targets else (0, 0))
        if listed:
            links, out_of_scope = self._sitemap_links(row, listed)
        self.out.page(row, status, ctype, error, fetched_at, size, time.monotonic() - started,
                      links, retry_after, detail, items, out_of_scope, archived, seen)
        return retry_after

    def _sitemap_links(self, row: dict[str, Any], listed: list[sitemaps.Listed]
                       ) -> tuple[int, int]:
        """A sitemap's links: its pages at its depth, with their lastmod; an index's
        sitemaps one deeper, up to ``sitemaps.MAX_DEPTH``.  Returns (links, out of scope)."""
        pages = [Link(x.url, modified_at=x.modified_at) for x in listed if not x.sitemap]
        more = [Link(x.url, SITEMAP) for x in listed if x.sitemap]
        depth = row["depth"]
        n, out = self.out.link_rows(row, pages, depth, [], self.opts, sitemaps.MAX_URLS)
        if more and depth < sitemaps.MAX_DEPTH:
            m, o = self.out.link_rows(row, more, depth + 1, [], self.opts, sitemaps.MAX_URLS)
            n, out = n + m, out + o
        return n, out

    def sitemap_links(self, origin: str, policy: RobotsPolicy, row: dict[str, Any]) -> None:
        """The sitemaps a robots.txt names, as links of it (depth 0, like seeds; as many
        host hops from a seed's host as ``row``, the URL it was read for)."""
        urls = [Link(url, SITEMAP) for url in policy.parser.sitemaps]
        if urls:
            robots = {"url": f"{origin}/robots.txt", "depth": 0, "host": row["host"],
                      "hops": row["hops"]}
            self.out.link_rows(robots, urls, 0, [], self.opts, sitemaps.MAX_URLS)

    @staticmethod
    def _seen(row: dict[str, Any], resp: aiohttp.ClientResponse, content: bytes) -> Seen:
        """What a response with ``content`` (its body, a redirect's Location) tells the next
        visit; changed unless the last visit's digest is the same."""
        digest = hashlib.sha1(content).digest()
        return Seen(digest != row["digest"], resp.headers.get("ETag"),
                    resp.headers.get("Last-Modified"), digest)

    def _redirect(self, row: dict[str, Any], location: str, status: int
                  ) -> tuple[ErrorKind | None, list[Link]]:
        """A redirect is a frontier event: its target is routed, deduplicated and fetched like
        a link found at the same depth, carrying the chain that led to it and the request's
        callback.  307 and 308 repeat the request's method and body; the others are a GET."""
        try:
            target = url_info(urljoin(row["url"], location), self.opts.partitions).url
        except (ValueError, InvalidURL):
            return ErrorKind.BAD_REDIRECT, []
        same = status in (307, 308) or not (row["method"] or row["body"])
        if (target == row["url"] and same) or target in row["redirect_chain"]:
            return ErrorKind.REDIRECT_LOOP, []
        if len(row["redirect_chain"]) + 1 > self.opts.max_redirects:
            return ErrorKind.TOO_MANY_REDIRECTS, []
        if same:
            return None, [Link(target, row["callback"], row["meta"], None, row["method"],
                               row["headers"], row["body"])]
        return None, [Link(target, row["callback"], row["meta"], None, None, row["headers"])]

    async def host(self, rows: list[dict[str, Any]]) -> None:
        """One host's URLs: robots.txt first if asked, then at most ``per_host`` at once,
        request starts at least the host's delay apart (with ``per_host`` 1, the delay runs
        from the end of the previous request), none after a 429/503 with Retry-After."""
        delay = max(r["delay_s"] for r in rows)
        allowed = []
        policies: dict[str, RobotsPolicy] = {}
        for row in rows:
            if row["robots_needed"]:
                origin = origin_of(row["url"])
                if origin not in policies:
                    policies[origin] = await self.robots(origin, row["host"])
                    if self.opts.sitemaps:
                        self.sitemap_links(origin, policies[origin], row)
                policy = policies[origin]
                delay = max(delay, policy.crawl_delay_s(self.agent))
                if policy.kind is RobotsKind.UNAVAILABLE:
                    # Not requested, no row: the DB worker queues the URL again as it was,
                    # behind the robots.txt's next try, or ends it once it gives up.
                    continue
                if not policy.allows(row["url"], self.agent):
                    self.out.page(row, None, None, ErrorKind.ROBOTS, datetime.now(UTC))
                    continue
            allowed.append(row)
        pending = list(reversed(allowed))
        next_start = time.monotonic() + (delay if policies else 0.0)
        jar = load_cookies(rows[0]["host"], rows[0]["cookies"]) if self.opts.cookies else None

        async def worker() -> None:
            nonlocal next_start
            while pending:
                row = pending.pop()
                now = time.monotonic()
                wait = next_start - now
                next_start = max(now, next_start) + delay
                if wait > 0:
                    await asyncio.sleep(wait)
                if await self.page(row, jar) is not None:
                    # The host asked for a pause: its other URLs are not fetched (no row), the
                    # DB worker queues them again behind the Retry-After.
                    pending.clear()
                if self.opts.per_host == 1:
                    # One at a time: count the delay from the end of the request, so the
                    # server sees arrivals ``delay`` apart whatever the network jitter.
                    next_start = max(next_start, time.monotonic() + delay)

        await asyncio.gather(*(worker() for _ in range(min(self.opts.per_host, len(allowed)))))
        if jar is not None and allowed:
            self.out.cookie_row(rows[0]["host"], dump_cookies(jar))
