"""The Arrow schemas of every stream between processes, and of the output.

Frontera's vocabulary: the *spider feed* (requests a DB worker hands to a fetch worker), the
*spider log* (what a fetch worker saw: pages crawled with their links, request errors) and the
*scoring log* (what a strategy worker decided: update_score with schedule or not).  A spider log
is two batches, pages and links, joined by ``parent_url``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from raycrawl.formats.entry import Entry
from raycrawl.urls import URLInfo

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
URL_LIST = pa.list_(pa.string())

# Which URL a row is about (the link's own, in SPIDER_LOG_LINKS): the first columns of every
# stream's rows.
_LOCATED = [
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("host", pa.string()),
    ("partition", pa.int32()),
    ("depth", pa.int32()),
]

# How a spider's follow asks for its URL, when not a plain GET: the method (null: GET), extra
# headers (msgpack map) and the body.  A request's fingerprint covers method and body.
_HTTP = [
    ("method", pa.string()),
    ("headers", pa.binary()),
    ("body", pa.binary()),
]

# Which fetch of its URL a row is (1: the first; revisits count on), and what the last one
# saw: its validators, for a conditional request, and its body's digest (sha1), to tell a
# changed page.
_VISIT = [
    ("visit", pa.int32()),
    ("etag", pa.string()),
    ("last_modified", pa.string()),
    ("digest", pa.binary()),
]

# One request for a fetch worker.  ``redirect_chain`` holds the URLs that redirected to this
# one, in order; ``delay_s`` is the host's spacing (config delay or robots Crawl-delay);
# ``robots_needed`` asks the task to fetch the origin's robots.txt first.  ``callback`` and
# ``meta`` (msgpack) are the spider's: which callback parses the page, what the follow carried.
SPIDER_FEED = pa.schema([
    *_LOCATED,
    ("score", pa.float64()),
    ("attempts", pa.int32()),
    ("redirect_chain", URL_LIST),
    ("delay_s", pa.float64()),
    ("robots_needed", pa.bool_()),
    ("callback", pa.string()),
    ("meta", pa.binary()),
    *_HTTP,
    ("cookies", pa.binary()),  # the host's cookies (msgpack), when the crawl keeps them
    *_VISIT,
    ("hops", pa.int32()),  # host changes on its path from a seed's host
])

# One fetched URL: a page crawled (status set) or a request error (status null, error set).
SPIDER_LOG_PAGES = pa.schema([
    *_LOCATED,
    ("status", pa.int32()),
    ("content_type", pa.string()),
    ("error", pa.string()),
    ("fetched_at", UTC_TIMESTAMP),
    ("size_bytes", pa.int64()),
    ("duration_s", pa.float64()),
    ("links_count", pa.int32()),
    ("attempts", pa.int32()),
    ("redirect_chain", URL_LIST),
    ("retry_after_s", pa.float64()),
    ("error_detail", pa.string()),  # a callback-error's exception, one line
    ("items_count", pa.int32()),  # items the spider's callback yielded
    ("out_of_scope", pa.int32()),  # links left out by the crawl's scope
    ("warc_file", pa.string()),  # with --warc: the file holding the response's records
    ("warc_offset", pa.int64()),  # and the offset of its request record there
    *_VISIT,  # this fetch's visit and what it saw (for the next one)
    ("changed", pa.bool_()),  # the body differs from the last visit's (always on visit 1)
])

# One extracted link (canonical), already routed: ``partition`` is the link's own.  A spider's
# follow sets ``callback``, ``meta`` (msgpack) and ``priority``.
SPIDER_LOG_LINKS = pa.schema([
    ("parent_url", pa.string()),
    ("parent_depth", pa.int32()),
    *_LOCATED,
    ("redirect_chain", URL_LIST),
    ("callback", pa.string()),
    ("meta", pa.binary()),
    ("priority", pa.float64()),
    *_HTTP,
    ("age_s", pa.float64()),  # a follow's revisit interval
    ("modified_at", pa.float64()),  # when the page last changed (a sitemap's <lastmod>)
    ("hops", pa.int32()),  # host changes from a seed's host: the parent's, +1 to another host
])

# One update_score: the strategy's verdict on a URL.
SCORING_LOG = pa.schema([
    *_LOCATED,
    ("score", pa.float64()),
    ("schedule", pa.bool_()),
    ("redirect_chain", URL_LIST),
    ("skip", pa.string()),  # not null: do not fetch, end the URL with this error kind
    ("callback", pa.string()),
    ("meta", pa.binary()),
    *_HTTP,
    ("age_s", pa.float64()),  # the URL's revisit interval (null: the crawl's)
    ("due_at", pa.float64()),  # not before this (epoch seconds; a strategy's ``at``)
    ("modified_at", pa.float64()),  # a fetched URL's page changed then: due now if fetched before
    ("hops", pa.int32()),  # host changes from a seed's host (0 on a seed's host)
])

# The cookies a host holds after a batch (a crawl with ``cookies``): Set-Cookie lines, msgpack.
COOKIES = pa.schema([
    ("host", pa.string()),
    ("cookies", pa.binary()),
])

# One item a spider's callback yielded, as a fetch worker hands it to its DB worker: the page's
# URL and fingerprint, the item's fields (msgpack).  ``OUT/items`` gets one column per field.
ITEMS = pa.schema([
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("item", pa.binary()),
])

# One robots.txt fetch a fetch worker made for an origin it was asked about.
ROBOTS = pa.schema([
    ("origin", pa.string()),
    ("host", pa.string()),
    ("status", pa.int32()),
    ("body", pa.binary()),
    ("error", pa.string()),
])

# One row of ``OUT/pages``: the contract's columns first, then extras.
PAGES = pa.schema([
    ("url", pa.string()),
    ("status", pa.int32()),
    ("depth", pa.int32()),
    ("content_type", pa.string()),
    ("fetched_at", UTC_TIMESTAMP),
    ("error", pa.string()),
    ("host", pa.string()),
    ("size_bytes", pa.int64()),
    ("duration_s", pa.float64()),
    ("links_count", pa.int32()),
    ("attempts", pa.int32()),
    ("redirect_chain", URL_LIST),
    ("items_count", pa.int32()),
    ("error_detail", pa.string()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
    ("visit", pa.int32()),
    ("changed", pa.bool_()),
])


def batch(schema: pa.Schema, columns: dict[str, Any]) -> pa.RecordBatch:
    """A record batch of ``schema`` from column lists or arrays (every column must be given)."""
    return pa.RecordBatch.from_arrays(
        [c if isinstance(c := columns[f.name], pa.Array) else pa.array(c, type=f.type)
         for f in schema], schema=schema)


# The columns that say which URL a row is about, in the feed, the spider log's pages and the
# scoring log; with ``attempts``, what a row built for a queued URL carries over from it.
IDENTITY = (*(name for name, _ in _LOCATED), "redirect_chain", "visit")
CARRIED = (*IDENTITY, "attempts")


def carried(entries: Sequence[Entry]) -> dict[str, list[Any]]:
    """The :data:`CARRIED` columns of queued URLs."""
    return {"url": [e.url for e in entries], "fingerprint": [e.fingerprint for e in entries],
            "host": [e.host for e in entries], "partition": [e.partition for e in entries],
            "depth": [e.depth for e in entries],
            "redirect_chain": [list(e.redirect_chain) for e in entries],
            "visit": [e.visit for e in entries], "attempts": [e.attempts for e in entries]}


def feed_rows(entries: Sequence[Entry], delay_s: Sequence[float],
              robots_needed: Sequence[bool],
              cookies: Sequence[bytes | None] | None = None) -> pa.RecordBatch:
    """A spider-feed batch of queued URLs, each with its host's delay, whether the fetch
    worker must read the origin's robots.txt first, and its host's cookies."""
    return batch(SPIDER_FEED, {**carried(entries), "score": [e.score for e in entries],
                               "delay_s": list(delay_s), "robots_needed": list(robots_needed),
                               "callback": [e.callback for e in entries],
                               "meta": [e.meta for e in entries],
                               "method": [e.method for e in entries],
                               "headers": [e.headers for e in entries],
                               "body": [e.body for e in entries],
                               "cookies": list(cookies) if cookies is not None
                               else [None] * len(entries),
                               "etag": [e.etag for e in entries],
                               "last_modified": [e.last_modified for e in entries],
                               "digest": [e.digest for e in entries],
                               "hops": [e.hops for e in entries]})


def feed_batch(urls: Iterable[URLInfo], depth: int = 0, score: float = 1.0) -> pa.RecordBatch:
    """A spider-feed batch of canonical URLs, all at ``depth`` with ``score``."""
    seeds = [Entry(i.url, i.fingerprint, i.host, i.partition, depth, score) for i in urls]
    return feed_rows(seeds, [0.0] * len(seeds), [False] * len(seeds))


def ended_rows(columns: dict[str, list[Any]], kinds: Sequence[str]) -> pa.RecordBatch:
    """Spider-log page rows for URLs that end without being fetched, each with its error
    kind; ``columns`` holds their :data:`CARRIED` columns (see :func:`carried`)."""
    n = len(kinds)
    return batch(SPIDER_LOG_PAGES, {
        **{name: columns[name] for name in CARRIED}, "status": [None] * n,
        "content_type": [None] * n, "error": [str(k) for k in kinds],
        "fetched_at": [datetime.now(UTC)] * n, "size_bytes": [0] * n, "duration_s": [0.0] * n,
        "links_count": [0] * n, "retry_after_s": [None] * n, "error_detail": [None] * n,
        "items_count": [0] * n, "out_of_scope": [0] * n, "warc_file": [None] * n,
        "warc_offset": [None] * n, "etag": [None] * n, "last_modified": [None] * n,
        "digest": [None] * n, "changed": [v == 1 or None for v in columns["visit"]]})


def page_rows(spider_log_pages: pa.RecordBatch) -> pa.RecordBatch:
    """The ``OUT/pages`` columns of spider-log page rows."""
    return pa.RecordBatch.from_arrays([spider_log_pages.column(f.name) for f in PAGES],
                                      schema=PAGES)


def empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
