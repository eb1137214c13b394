"""A spider-feed batch fetched in this process, without Ray: what a fetch worker does, for
tests of the fetch path."""

from __future__ import annotations

import aiohttp
import pyarrow as pa

from raycrawl.fetch.batch import fetch_hosts
from raycrawl.fetch.callbacks import CallbackRunner
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.warc import WarcFiles


async def fetch_feed(feed: pa.RecordBatch, opts: FetchOptions,
                     session: aiohttp.ClientSession | None = None,
                     limit: RequestLimit | None = None,
                     callbacks: CallbackRunner | None = None,
                     warc: WarcFiles | None = None) -> FetchResult:
    """Every request of ``feed`` fetched: :func:`fetch_hosts`'s parts in one."""
    return FetchResult.concat([part async for _, part in fetch_hosts(feed, opts, session, limit,
                                                                    callbacks, warc)])
