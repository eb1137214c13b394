"""The Arrow schemas of every stream between processes, and of the output.

Frontera's vocabulary: the *spider feed* (requests a DB worker hands to a fetch task), the
*spider log* (what a fetch task saw: pages crawled with their links, request errors) and the
*scoring log* (what a strategy worker decided: update_score with schedule or not).  A spider log
is two batches, pages and links, joined by ``parent_url``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from raycrawl.urls import URLInfo

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
URL_LIST = pa.list_(pa.string())

# One request for a fetch task.  ``redirect_chain`` holds the URLs that redirected to this
# one, in order; ``delay_s`` is the host's spacing (config delay or robots Crawl-delay);
# ``robots_needed`` asks the task to fetch the origin's robots.txt first.
SPIDER_FEED = pa.schema([
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("host", pa.string()),
    ("partition", pa.int32()),
    ("depth", pa.int32()),
    ("score", pa.float64()),
    ("attempts", pa.int32()),
    ("redirect_chain", URL_LIST),
    ("delay_s", pa.float64()),
    ("robots_needed", pa.bool_()),
])

# One fetched URL: a page crawled (status set) or a request error (status null, error set).
SPIDER_LOG_PAGES = pa.schema([
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("host", pa.string()),
    ("partition", pa.int32()),
    ("depth", pa.int32()),
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
])

# One extracted link (canonical), already routed: ``partition`` is the link's own.
SPIDER_LOG_LINKS = pa.schema([
    ("parent_url", pa.string()),
    ("parent_depth", pa.int32()),
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("host", pa.string()),
    ("partition", pa.int32()),
    ("depth", pa.int32()),
    ("redirect_chain", URL_LIST),
])

# One update_score: the strategy's verdict on a URL.
SCORING_LOG = pa.schema([
    ("url", pa.string()),
    ("fingerprint", pa.uint64()),
    ("host", pa.string()),
    ("partition", pa.int32()),
    ("depth", pa.int32()),
    ("score", pa.float64()),
    ("schedule", pa.bool_()),
    ("redirect_chain", URL_LIST),
    ("skip", pa.string()),  # not null: do not fetch, end the URL with this error kind
])

# One robots.txt fetch a fetch task made for an origin it was asked about.
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
])


def batch(schema: pa.Schema, columns: dict[str, list[Any]]) -> pa.RecordBatch:
    """A record batch of ``schema`` from column lists (every column must be given)."""
    return pa.RecordBatch.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema],
                                      schema=schema)


def feed_batch(urls: Iterable[URLInfo], depth: int = 0, score: float = 1.0) -> pa.RecordBatch:
    """A spider-feed batch of canonical URLs, all at ``depth`` with ``score``."""
    infos = list(urls)
    n = len(infos)
    return batch(SPIDER_FEED, {
        "url": [i.url for i in infos], "fingerprint": [i.fingerprint for i in infos],
        "host": [i.host for i in infos], "partition": [i.partition for i in infos],
        "depth": [depth] * n, "score": [score] * n, "attempts": [0] * n,
        "redirect_chain": [[]] * n, "delay_s": [0.0] * n, "robots_needed": [False] * n})


def empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)
