"""One URL fetched, as stages in one visible order (:meth:`PageFetcher.fetch`):

1. **guard**: a host that is an address the crawl may not reach is refused unrequested;
2. **request**: the method, the follow's headers, a revisit's conditional headers, the
   host's cookies;
3. **send**: a request slot (in all, per IP), the request, the answer's status, cookies and
   Retry-After;
4. **answer**, by kind: not modified (a revisit's 304), a redirect (its target is a link to
   follow, never followed here) or a body, read within ``max_body_bytes``, whose digest
   tells a changed page;
5. **content**: a sitemap's URLs, or the page's links and the response a callback gets
   (of the DOM a browser rendered, for a URL the crawl renders: ``raycrawl.render``);
6. **archive**: the exchange's WARC records;
7. **callback**: the spider's callback on the response (its follows, its items);
8. **emit**: the link rows and the page row, into the host's collector.

Every stage reads and fills one :class:`Fetch`.  An expected failure of the URL is a value
(``Fetch.error``, an :class:`~raycrawl.errors.ErrorKind`), never an exception out of here.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from raycrawl.errors import ErrorKind, InvalidURL
from raycrawl.fetch import sitemaps
from raycrawl.fetch.callbacks import CallbackRunner
from raycrawl.fetch.client import error_kind, read_body, retry_after_s
from raycrawl.fetch.collect import Collector, Link, Parent
from raycrawl.fetch.extract import extract_links, is_html
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.sitemaps import SITEMAP
from raycrawl.formats.entry import unpack_meta
from raycrawl.formats.schemas import FetchOutcome, FetchRequest
from raycrawl.formats.warc import IDENTICAL, NOT_MODIFIED, WarcFiles
from raycrawl.render.browser import BrowserUnavailable, Renderer, RenderJob
from raycrawl.render.spec import RenderSpec
from raycrawl.spider import SpiderResponse
from raycrawl.urls import url_info


@dataclass(frozen=True, slots=True)
class Seen:
    """What a fetch saw of its page, for the next visit: changed since the last one (None: no
    answer to tell), the validators and the body's digest."""

    changed: bool | None
    etag: str | None
    last_modified: str | None
    digest: bytes | None

    @classmethod
    def before(cls, req: FetchRequest) -> Seen:
        """No answer: what the last visit saw still stands (visit 1 is "changed")."""
        return cls(req.visit == 1 or None, req.etag, req.last_modified, req.digest)


@dataclass(slots=True)
class Fetch:
    """One URL's fetch, as its stages fill it in."""

    req: FetchRequest
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    resp: aiohttp.ClientResponse | None = None
    status: int | None = None
    content_type: str | None = None
    error: ErrorKind | None = None
    retry_after: float | None = None
    body: bytes = b""
    truncated: str = "unspecified"  # what the WARC record holds of the body
    read: bool = False  # the body was read (its digest is the page's)
    seen: Seen | None = None
    targets: list[str | Link] = field(default_factory=list)
    redirected: bool = False  # the targets are a redirect's: same depth, the chain grows
    listed: list[sitemaps.Listed] = field(default_factory=list)
    response: SpiderResponse | None = None  # for the spider's callback
    archived: tuple[str, int] | None = None  # WARC file and offset
    detail: str | None = None
    items: list[bytes] = field(default_factory=list)
    location: str | None = None  # a redirect's target
    took: float = 0.0  # seconds from the request's start to its answer read (no callback)
    render_s: float = 0.0  # seconds its browser took (not in ``took``)
    rendered: bool = False
    screenshot: bytes | None = None

    def sent(self) -> None:
        """The request leaves now (not when it began to wait for a slot): a revisit is due
        an interval after this."""
        self.fetched_at, self.started = datetime.now(UTC), time.monotonic()


def request_headers(req: FetchRequest, jar: aiohttp.CookieJar | None) -> dict[str, str]:
    """The follow's headers, a revisit's If-None-Match / If-Modified-Since, the cookies."""
    headers = unpack_meta(req.headers)
    if req.visit > 1:
        if req.etag:
            headers["If-None-Match"] = req.etag
        if req.last_modified:
            headers["If-Modified-Since"] = req.last_modified
    if jar is not None and (cookies := jar.filter_cookies(URL(req.url))):
        headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
    return headers


def seen_in(req: FetchRequest, resp: aiohttp.ClientResponse, content: bytes) -> Seen:
    """What a response with ``content`` (its body, a redirect's Location) tells the next
    visit; changed unless the last visit's digest is the same."""
    digest = hashlib.sha1(content).digest()
    return Seen(digest != req.digest, resp.headers.get("ETag"),
                resp.headers.get("Last-Modified"), digest)


def redirect_target(req: FetchRequest, location: str, status: int, opts: FetchOptions
                    ) -> tuple[ErrorKind | None, list[Link]]:
    """A redirect is a frontier event: its target is routed, deduplicated and fetched like
    a link found at the same depth, carrying the chain that led to it and the request's
    callback.  307 and 308 repeat the request's method and body; the others are a GET."""
    try:
        target = url_info(urljoin(req.url, location), opts.partitions).url
    except (ValueError, InvalidURL):
        return ErrorKind.BAD_REDIRECT, []
    same = status in (307, 308) or not (req.method or req.body)
    if (target == req.url and same) or target in req.redirect_chain:
        return ErrorKind.REDIRECT_LOOP, []
    if len(req.redirect_chain) + 1 > opts.max_redirects:
        return ErrorKind.TOO_MANY_REDIRECTS, []
    if same:
        return None, [Link(target, req.callback, req.meta, None, req.method, req.headers,
                           req.body, render=req.render)]
    return None, [Link(target, req.callback, req.meta, None, None, req.headers,
                       render=req.render)]


RENDERED_TYPE = "text/html; charset=utf-8"  # a rendered DOM's (Playwright's page.content())


def read_sitemap(body: bytes) -> tuple[ErrorKind | None, list[sitemaps.Listed]]:
    try:
        return None, sitemaps.parse(body)
    except sitemaps.BadSitemap:
        return ErrorKind.BAD_SITEMAP, []


class PageFetcher:
    """Fetches single URLs of a batch (every host's) through the stages; shares the batch's
    session, request limit, callbacks and WARC files."""

    def __init__(self, session: aiohttp.ClientSession, opts: FetchOptions,
                 limit: RequestLimit | None = None, callbacks: CallbackRunner | None = None,
                 warc: WarcFiles | None = None, guard: AddressGuard | None = None,
                 renderer: Renderer | None = None) -> None:
        self.session, self.opts, self.warc, self.callbacks = session, opts, warc, callbacks
        self.limit = limit or RequestLimit(opts.concurrency, opts.per_ip)
        self.guard = guard or AddressGuard(opts.allow_network)
        self.handle_status = frozenset(callbacks.spider.handle_status) if callbacks else frozenset()
        self.follow_links = callbacks is None or callbacks.spider.follow_links
        self.renderer = renderer
        self.render_rule = opts.render.with_spider(callbacks.spider.render if callbacks else None)

    async def fetch(self, req: FetchRequest, out: Collector,
                    jar: aiohttp.CookieJar | None = None) -> Fetch:
        """Fetch ``req`` into ``out`` (with the host's cookies in ``jar``, which takes the ones
        the response sets); returns what the stages made of it (its ``retry_after``: the
        seconds of a 429/503 Retry-After)."""
        f = Fetch(req)
        if self.guard.check_host_literal(req.host) is not None:
            f.error = ErrorKind.BLOCKED_ADDRESS
        else:
            try:
                await self.send(f, jar)
            except Exception as exc:  # mapped to a kind, or raised again, by error_kind
                f.error = error_kind(exc)
        f.took = time.monotonic() - f.started - f.render_s
        self.archive(f)
        await self.callback(f)
        self.emit(f, out)
        return f

    async def send(self, f: Fetch, jar: aiohttp.CookieJar | None) -> None:
        req = f.req
        headers = request_headers(req, jar)
        async with self.limit.slot(req.host):
            f.sent()
            async with self.session.request(req.method or "GET", req.url,
                                            headers=headers or None, data=req.body,
                                            allow_redirects=False) as resp:
                f.resp, f.status = resp, resp.status
                f.content_type = resp.headers.get("Content-Type")
                if jar is not None:
                    jar.update_cookies(resp.cookies, resp.url)
                if resp.status in (429, 503):
                    f.retry_after = retry_after_s(resp.headers.get("Retry-After"), f.fetched_at)
                await self.answer(f, resp)

    async def answer(self, f: Fetch, resp: aiohttp.ClientResponse) -> None:
        req, status = f.req, resp.status
        if status == 304 and req.visit > 1:  # not modified since the last visit
            f.seen = Seen(False, resp.headers.get("ETag") or req.etag,
                          resp.headers.get("Last-Modified") or req.last_modified, req.digest)
        elif 300 <= status < 400 and "Location" in resp.headers:
            location = f.location = resp.headers["Location"]
            with contextlib.suppress(ValueError):  # unusable: kept as it came
                f.location = urljoin(req.url, location)
            f.seen = seen_in(req, resp, location.encode("utf-8", "replace"))
            f.redirected = True
            if f.seen.changed:  # else its target is known already
                f.error, targets = redirect_target(req, location, status, self.opts)
                f.targets += targets
        else:
            await self.read(f, resp)

    async def read(self, f: Fetch, resp: aiohttp.ClientResponse) -> None:
        sitemap = f.req.callback == SITEMAP
        cap = max(self.opts.max_body_bytes, sitemaps.MAX_BYTES if sitemap else 0)
        f.body, too_large = await read_body(resp, cap)
        f.read = True
        f.truncated = "length" if too_large else ""
        f.seen = seen_in(f.req, resp, f.body)
        if too_large:
            f.error = ErrorKind.TOO_LARGE
        elif not f.seen.changed:  # an unchanged page's links and items are known
            pass
        elif sitemap:
            if resp.status < 300:
                f.error, f.listed = read_sitemap(f.body)
        else:
            await self.content(f, resp)

    async def content(self, f: Fetch, resp: aiohttp.ClientResponse) -> None:
        """A changed page's links, and the response its callback gets: of its DOM once a
        browser rendered it, when the crawl renders its URL."""
        status, ctype, body = resp.status, f.content_type, f.body
        links = self.follow_links and is_html(ctype) and status < 300
        callback = self.callbacks is not None and (200 <= status < 300
                                                   or status in self.handle_status)
        spec = self.render_rule.spec_for(f.req.url, f.req.render) if links or callback else None
        if spec is not None and is_html(ctype):
            dom = await self.render(f, resp, spec)
            if dom is None:
                return
            body, ctype = dom, RENDERED_TYPE
        if links:
            f.targets += extract_links(str(resp.url), body, ctype, self.opts.link_parser)
        if callback:
            f.response = SpiderResponse(str(resp.url), status, resp.headers, body,
                                        unpack_meta(f.req.meta), f.req.depth, ctype,
                                        f.req.visit)

    async def render(self, f: Fetch, resp: aiohttp.ClientResponse, spec: RenderSpec
                     ) -> bytes | None:
        """The page's DOM as a browser rendered it (the URLs its scripts navigated to are
        links), or None with the page's error.  A browser that died under it raises
        (``BrowserCrashed``): an infrastructure fault, the URL is fetched again."""
        started = time.monotonic()
        cookie = resp.request_info.headers.get("Cookie", "")
        job = RenderJob(str(resp.url), resp.status, list(resp.headers.items()), f.body, spec,
                        [tuple(c.strip().split("=", 1)) for c in cookie.split(";")  # type: ignore[misc]
                         if "=" in c])
        try:
            if self.renderer is None:
                raise BrowserUnavailable("this fetch path has no browser")
            out = await self.renderer.render(job)
        except BrowserUnavailable as exc:
            f.error, f.detail = ErrorKind.RENDER_ERROR, f"no browser: {exc}"
            return None
        finally:
            f.render_s = time.monotonic() - started
        if out.error is not None:
            f.error = ErrorKind.RENDER_TIMEOUT if out.error == "timeout" else ErrorKind.RENDER_ERROR
            f.detail = out.detail
            return None
        f.rendered, f.screenshot = True, out.screenshot
        f.targets += out.navigations
        return out.html

    def archive(self, f: Fetch) -> None:
        """The exchange's WARC records (a revisit record for an unchanged page).  On the
        event loop: 0.2 ms a 50 KB page; a thread per record cost more in hand-offs and GIL
        waits than it saved (benchmarks/README.md, steps 17, 19)."""
        resp = f.resp
        if self.warc is None or resp is None or f.status is None:
            return
        seen = f.seen
        f.archived = self.warc.write(
            f.req.url, resp.method, list(resp.request_info.headers.items()), f.status,
            resp.reason or "", list(resp.headers.items()), f.body, f.truncated,
            f.req.body or b"", digest=seen.digest if f.read and seen else None,
            revisit=None if seen is None or seen.changed else (
                NOT_MODIFIED if f.status == 304 else IDENTICAL))

    async def callback(self, f: Fetch) -> None:
        """The spider's callback: its follows come before the page's own links."""
        if f.response is None or self.callbacks is None:
            return
        outcome = await self.callbacks.run(f.req.callback, f.response)
        if outcome.error is not None:
            f.error, f.detail, f.targets = ErrorKind.CALLBACK_ERROR, outcome.error, []
        else:
            f.items = outcome.items
            f.targets = [*map(Link.follow, outcome.follows), *f.targets]

    def emit(self, f: Fetch, out: Collector) -> None:
        req = f.req
        links = out_of_scope = 0
        if f.listed:
            links, out_of_scope = self.sitemap_links(f, out)
        elif f.targets:
            depth, chain = ((req.depth, [*req.redirect_chain, req.url]) if f.redirected else
                            (req.depth + 1, []))
            links, out_of_scope = out.link_rows(Parent.of(req), f.targets, depth, chain,
                                                self.opts)
        seen = f.seen or Seen.before(req)
        fetched = f.error is None or f.error.fetched
        out.page(FetchOutcome(
            req.url, req.fingerprint, req.host, req.partition, req.depth, status=f.status,
            content_type=f.content_type, error=f.error, fetched_at=f.fetched_at,
            size_bytes=len(f.body), duration_s=f.took,
            links_count=links, attempts=req.attempts + (1 if fetched else 0),
            redirect_chain=req.redirect_chain, retry_after_s=f.retry_after,
            error_detail=f.detail, items_count=len(f.items), out_of_scope=out_of_scope,
            warc_file=f.archived[0] if f.archived else None,
            warc_offset=f.archived[1] if f.archived else None, visit=req.visit,
            etag=seen.etag, last_modified=seen.last_modified, digest=seen.digest,
            changed=seen.changed, location=f.location, rendered=f.rendered,
            screenshot=f.screenshot), f.items)

    def sitemap_links(self, f: Fetch, out: Collector) -> tuple[int, int]:
        """A sitemap's links: its pages at its depth, with their lastmod; an index's
        sitemaps one deeper, up to ``sitemaps.MAX_DEPTH``.  Returns (links, out of scope)."""
        parent, depth = Parent.of(f.req), f.req.depth
        pages = [Link(x.url, modified_at=x.modified_at) for x in f.listed if not x.sitemap]
        more = [Link(x.url, SITEMAP) for x in f.listed if x.sitemap]
        n, out_of_scope = out.link_rows(parent, pages, depth, [], self.opts, sitemaps.MAX_URLS)
        if more and depth < sitemaps.MAX_DEPTH:
            m, o = out.link_rows(parent, more, depth + 1, [], self.opts, sitemaps.MAX_URLS)
            n, out_of_scope = n + m, out_of_scope + o
        return n, out_of_scope
