"""The work of a fetch worker (``actors.fetch.FetchWorker``), in its own process only.

This module is the fetch path's door: aiohttp, the link parsers, the spider's callbacks, WARC
writing and the browser client load with it.  The actor class a DB worker creates is a shell
that imports it when the actor starts, so a DB worker (and the coordinator that creates DB
workers) never loads any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import aiohttp
import pyarrow as pa

from raycrawl.fetch.batch import callback_runner, fetch_hosts, warc_files
from raycrawl.fetch.client import open_session
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult

from .browser import BrowserClient
from .logs import tag_logs


class Fetcher:
    """What a fetch worker does: runs spider-feed batches for one crawl's DB worker; safe to
    call concurrently."""

    def __init__(self, options: FetchOptions, name: str = "fetcher") -> None:
        crawl_id, _, role = name.partition("/")
        tag_logs(crawl_id, role)
        self.options = options
        # Its WARC files are named by its actor name, without the crawl id.
        self.warc = (warc_files(options, name.split("/", 1)[-1].replace("/", "-"))
                     if options.warc_dir is not None else None)
        self.session: aiohttp.ClientSession | None = None
        self.limit: RequestLimit | None = None
        # The spider instance (one per worker) and the thread its callbacks run on.
        self.callbacks = callback_runner(options) if options.spider is not None else None
        self.browser = BrowserClient(options, name)  # started at the first render

    async def fetch(self, feed: pa.RecordBatch) -> AsyncGenerator[tuple[list[str], FetchResult]]:
        """Fetch every request of ``feed``; a Ray streaming generator of (hosts, their rows) as
        each host ends (see ``fetch_hosts``)."""
        if self.session is None or self.session.closed:
            self.session = open_session(self.options)
            self.limit = RequestLimit(self.options.concurrency, self.options.per_ip)
        async with contextlib.aclosing(fetch_hosts(feed, self.options, self.session, self.limit,
                                                   self.callbacks, self.warc,
                                                   self.browser)) as parts:
            async for part in parts:
                yield part

    async def close(self) -> None:
        """Close the HTTP session (its keep-alive connections) and the WARC file (with an
        ``OUT`` elsewhere, that uploads it) before the worker is ended."""
        if self.session is not None and not self.session.closed:
            await self.session.close()
        await self.browser.close()
        await self.publish_warc()

    async def publish_warc(self) -> None:
        """Close the WARC file (with an ``OUT`` elsewhere, that uploads it); the next record
        opens the next file."""
        if self.warc is not None:
            await asyncio.to_thread(self.warc.close)

    async def browser_stats(self) -> dict[str, int] | None:
        """The browser worker's stats (None: none started)."""
        if self.browser.actor is None:
            return None
        return await self.browser.actor.stats.remote()
