"""The records of every stream between processes, and of the output, with their Arrow schemas
(derived from the records, ``raycrawl.records``).

Frontera's vocabulary: the *spider feed* (requests a DB worker hands to a fetch worker), the
*spider log* (what a fetch worker saw: pages crawled with their links, request errors) and the
*scoring log* (what a strategy worker decided: update_score with schedule or not).  A spider log
is two batches, pages and links, joined by ``parent_url``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from raycrawl.errors import ErrorKind
from raycrawl.formats.entry import Entry
from raycrawl.records import Int32, Record, UInt64
from raycrawl.urls import URLInfo

# ``redirect_chain`` holds the URLs that redirected to this one, in order.  How a spider's
# follow asks for its URL, when not a plain GET: the method (None: GET), extra headers
# (msgpack map) and the body; a request's fingerprint covers method and body.  Which fetch of
# its URL a row is (``visit``, 1: the first; revisits count on), and what the last one saw:
# its validators, for a conditional request, and its body's digest (sha1), to tell a changed
# page.


@dataclass(frozen=True, slots=True)
class Located(Record):
    """Which URL a row is about: the first columns of the feed, the spider log's pages and the
    scoring log (a :class:`LinkFound` names its parent first, then its own URL the same way)."""

    url: str
    fingerprint: UInt64
    host: str
    partition: Int32
    depth: Int32


@dataclass(frozen=True, slots=True)
class FetchRequest(Located):
    """One request for a fetch worker: a row of the spider feed.  ``delay_s`` is the host's
    spacing (config delay or robots Crawl-delay); ``robots_needed`` asks the fetch worker to
    read the origin's robots.txt first; ``callback`` and ``meta`` (msgpack) are the spider's:
    which callback parses the page, what the follow carried; ``cookies`` the host's (msgpack),
    when the crawl keeps them."""

    score: float = 1.0
    attempts: Int32 = 0
    redirect_chain: tuple[str, ...] = ()
    delay_s: float = 0.0
    robots_needed: bool = False
    callback: str | None = None
    meta: bytes | None = None
    method: str | None = None
    headers: bytes | None = None
    body: bytes | None = None
    cookies: bytes | None = None
    visit: Int32 = 1
    etag: str | None = None
    last_modified: str | None = None
    digest: bytes | None = None
    hops: Int32 = 0  # host changes on its path from a seed's host
    render: bytes | None = None  # a follow's render choice (raycrawl.render.spec)

    @classmethod
    def of(cls, e: Entry, delay_s: float = 0.0, robots_needed: bool = False,
           cookies: bytes | None = None) -> FetchRequest:
        """The request for a queued URL."""
        return cls(e.url, e.fingerprint, e.host, e.partition, e.depth, e.score, e.attempts,
                   e.redirect_chain, delay_s, robots_needed, e.callback, e.meta, e.method,
                   e.headers, e.body, cookies, e.visit, e.etag, e.last_modified, e.digest,
                   e.hops, e.render)


@dataclass(frozen=True, slots=True)
class FetchOutcome(Located):
    """One fetched URL (a row of the spider log's pages): a page crawled (``status`` set) or a
    request error (``status`` None, ``error`` set)."""

    status: Int32 | None = None
    content_type: str | None = None
    error: ErrorKind | None = None
    fetched_at: datetime | None = None
    size_bytes: int = 0
    duration_s: float = 0.0
    links_count: Int32 = 0
    attempts: Int32 = 0
    redirect_chain: tuple[str, ...] = ()
    retry_after_s: float | None = None
    error_detail: str | None = None  # a callback-error's exception, one line
    items_count: Int32 = 0  # items the spider's callback yielded
    out_of_scope: Int32 = 0  # links left out by the crawl's scope
    warc_file: str | None = None  # with --warc: the file holding the response's records
    warc_offset: int | None = None  # and the offset of its request record there
    visit: Int32 = 1  # this fetch's visit and what it saw (for the next one)
    etag: str | None = None
    last_modified: str | None = None
    digest: bytes | None = None
    changed: bool | None = None  # the body differs from the last visit's (always on visit 1)
    location: str | None = None  # a redirect's target (absolute), as its Location said
    rendered: bool = False  # its DOM is a browser's (raycrawl.render)
    screenshot: bytes | None = None  # a rendered page's PNG, when its render asked for one


@dataclass(frozen=True, slots=True)
class LinkFound(Record):
    """One extracted link (canonical), already routed (a row of the spider log's links):
    ``partition`` is the link's own.  A spider's follow sets ``callback``, ``meta`` (msgpack),
    ``priority``, the request's method, headers and body and ``interval_s``; ``hops`` is the
    parent's, +1 to another host."""

    parent_url: str
    parent_depth: Int32
    url: str
    fingerprint: UInt64
    host: str
    partition: Int32
    depth: Int32
    redirect_chain: tuple[str, ...] = ()
    callback: str | None = None
    meta: bytes | None = None
    priority: float | None = None
    method: str | None = None
    headers: bytes | None = None
    body: bytes | None = None
    interval_s: float | None = None  # a follow's revisit interval
    modified_at: float | None = None  # when the page last changed (a sitemap's <lastmod>)
    hops: Int32 = 0
    render: bytes | None = None  # a follow's render choice (raycrawl.render.spec)


@dataclass(frozen=True, slots=True)
class ScoreUpdate(Located):
    """One update_score (a row of the scoring log): the strategy's verdict on a URL.  ``skip``
    set: do not fetch, end the URL with that error kind."""

    score: float = 1.0
    schedule: bool = True
    redirect_chain: tuple[str, ...] = ()
    skip: str | None = None
    callback: str | None = None
    meta: bytes | None = None
    method: str | None = None
    headers: bytes | None = None
    body: bytes | None = None
    interval_s: float | None = None  # the URL's revisit interval (None: the crawl's)
    not_before: float | None = None  # epoch seconds (a strategy's ``at``)
    modified_at: float | None = None  # a fetched URL's page changed then: due now if before
    hops: Int32 = 0  # host changes from a seed's host (0 on a seed's host)
    render: bytes | None = None  # a follow's render choice (raycrawl.render.spec)


@dataclass(frozen=True, slots=True)
class HostCookies(Record):
    """The cookies a host holds after a batch (a crawl with ``cookies``): Set-Cookie lines,
    msgpack."""

    host: str
    cookies: bytes


@dataclass(frozen=True, slots=True)
class ItemFound(Record):
    """One item a spider's callback yielded, as a fetch worker hands it to its DB worker: the
    page's URL and fingerprint, the item's fields (msgpack).  ``OUT/items`` gets one column
    per field."""

    url: str
    fingerprint: UInt64
    item: bytes


@dataclass(frozen=True, slots=True)
class RobotsFetch(Record):
    """One robots.txt fetch a fetch worker made for an origin it was asked about."""

    origin: str
    host: str
    status: Int32 | None
    body: bytes
    error: ErrorKind | None


@dataclass(frozen=True, slots=True)
class PageRow(Record):
    """One row of ``OUT/pages``: the contract's columns first, then extras (all of them a
    :class:`FetchOutcome`'s)."""

    url: str
    status: Int32 | None
    depth: Int32
    content_type: str | None
    fetched_at: datetime
    error: str | None
    host: str
    size_bytes: int
    duration_s: float
    links_count: Int32
    attempts: Int32
    redirect_chain: tuple[str, ...]
    items_count: Int32
    error_detail: str | None
    warc_file: str | None
    warc_offset: int | None
    visit: Int32
    changed: bool | None
    location: str | None
    rendered: bool
    screenshot: bytes | None


SPIDER_FEED = FetchRequest.schema()
SPIDER_LOG_PAGES = FetchOutcome.schema()
SPIDER_LOG_LINKS = LinkFound.schema()
SCORING_LOG = ScoreUpdate.schema()
COOKIES = HostCookies.schema()
ITEMS = ItemFound.schema()
ROBOTS = RobotsFetch.schema()
PAGES = PageRow.schema()


def feed_rows(entries: Sequence[Entry], delay_s: Sequence[float],
              robots_needed: Sequence[bool],
              cookies: Sequence[bytes | None] | None = None) -> pa.RecordBatch:
    """A spider-feed batch of queued URLs, each with its host's delay, whether the fetch
    worker must read the origin's robots.txt first, and its host's cookies."""
    jars = cookies if cookies is not None else [None] * len(entries)
    return FetchRequest.to_batch([FetchRequest.of(e, d, r, c) for e, d, r, c in
                                  zip(entries, delay_s, robots_needed, jars)])


def feed_batch(urls: Iterable[URLInfo], depth: int = 0, score: float = 1.0) -> pa.RecordBatch:
    """A spider-feed batch of canonical URLs, all at ``depth`` with ``score``."""
    return FetchRequest.to_batch([FetchRequest(i.url, i.fingerprint, i.host, i.partition, depth,
                                               score) for i in urls])


def ended(url: Entry | FetchRequest, kind: ErrorKind) -> FetchOutcome:
    """The spider-log row of a URL that ends without being fetched, with error ``kind`` (what
    its last visit saw still stands)."""
    return FetchOutcome(url.url, url.fingerprint, url.host, url.partition, url.depth,
                        error=kind, fetched_at=datetime.now(UTC), attempts=url.attempts,
                        redirect_chain=url.redirect_chain, visit=url.visit,
                        etag=url.etag, last_modified=url.last_modified, digest=url.digest,
                        changed=url.visit == 1 or None)


def ended_rows(urls: Iterable[tuple[Entry | FetchRequest, ErrorKind]]) -> pa.RecordBatch:
    """Spider-log page rows of URLs that end without being fetched, each with its kind."""
    return FetchOutcome.to_batch([ended(url, kind) for url, kind in urls])


def page_rows(spider_log_pages: pa.RecordBatch) -> pa.RecordBatch:
    """The ``OUT/pages`` columns of spider-log page rows."""
    return pa.RecordBatch.from_arrays([spider_log_pages.column(f.name) for f in PAGES],
                                      schema=PAGES)

