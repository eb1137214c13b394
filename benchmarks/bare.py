"""The practical ceiling per core: one process, one asyncio loop, aiohttp, an in-memory frontier.

It does the per-page work raycrawl does (the same link extraction and canonicalisation, dedup by
fingerprint, redirects followed as links, Parquet rows out) and nothing else: no Ray, no RocksDB,
no sharding, no politeness beyond a per-host limit on requests in flight.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict, deque
from urllib.parse import urljoin

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.args import runner_arguments
from raycrawl.errors import InvalidURL
from raycrawl.fetch.extract import extract_links, is_html
from raycrawl.urls import url_info

_SCHEMA = pa.schema([("url", pa.string()), ("status", pa.int32()), ("depth", pa.int32()),
                     ("error", pa.string()), ("links_count", pa.int32())])


class Frontier:
    """Per-host FIFO queues served round-robin, at most ``per_host`` requests per host."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self.queues: defaultdict[str, deque[tuple[str, int]]] = defaultdict(deque)
        self.active: defaultdict[str, int] = defaultdict(int)
        self.ready: deque[str] = deque()
        self.in_ready: set[str] = set()
        self.seen: set[int] = set()
        self.busy = 0
        self.changed = asyncio.Condition()

    def add(self, url: str, depth: int) -> None:
        try:
            info = url_info(url, 1)
        except InvalidURL:
            return
        if info.fingerprint in self.seen:
            return
        self.seen.add(info.fingerprint)
        self.queues[info.host].append((info.url, depth))
        self._offer(info.host)

    def _offer(self, host: str) -> None:
        if self.queues[host] and self.active[host] < self.per_host and host not in self.in_ready:
            self.ready.append(host)
            self.in_ready.add(host)

    async def take(self) -> tuple[str, str, int] | None:
        async with self.changed:
            while not self.ready:
                if self.busy == 0:
                    self.changed.notify_all()
                    return None
                await self.changed.wait()
            host = self.ready.popleft()
            self.in_ready.discard(host)
            url, depth = self.queues[host].popleft()
            self.active[host] += 1
            self.busy += 1
            self._offer(host)
            return host, url, depth

    async def done(self, host: str) -> None:
        async with self.changed:
            self.active[host] -= 1
            self.busy -= 1
            self._offer(host)
            self.changed.notify_all()


class Output:
    def __init__(self, folder: str, rows_per_file: int = 20_000) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder, self.rows_per_file = folder, rows_per_file
        self.rows: dict[str, list] = {name: [] for name in _SCHEMA.names}
        self.files = 0

    def add(self, url: str, status: int | None, depth: int, error: str | None, links: int) -> None:
        for name, value in zip(_SCHEMA.names, (url, status, depth, error, links)):
            self.rows[name].append(value)
        if len(self.rows["url"]) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if self.rows["url"]:
            table = pa.Table.from_pydict(self.rows, schema=_SCHEMA)
            pq.write_table(table, os.path.join(self.folder, f"part-{self.files:05d}.parquet"))
            self.files += 1
            self.rows = {name: [] for name in _SCHEMA.names}


async def crawl(seed: str, out: Output, concurrency: int, per_host: int) -> int:
    frontier = Frontier(per_host)
    frontier.add(seed, 0)
    fetched = 0
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=20)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fetch(url: str, depth: int) -> None:
            status, error, links = None, None, []
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    status = resp.status
                    body = await resp.read()
                    if 300 <= status < 400 and "Location" in resp.headers:
                        links = [urljoin(url, resp.headers["Location"])]
                        depth -= 1  # a redirect target keeps its depth
                    elif status < 300 and is_html(resp.headers.get("Content-Type")):
                        links = extract_links(url, body, resp.headers.get("Content-Type"))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
            for link in links:
                frontier.add(link, depth + 1)
            out.add(url, status, depth, error, len(links))

        async def worker() -> None:
            nonlocal fetched
            while (job := await frontier.take()) is not None:
                host, url, depth = job
                try:
                    await fetch(url, depth)
                    fetched += 1
                finally:
                    await frontier.done(host)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.flush()
    return fetched


def main(argv: list[str] | None = None) -> None:
    args = runner_arguments(__doc__.split("\n\n")[0], argv)
    started = time.monotonic()
    fetched = asyncio.run(crawl(args.seed, Output(args.out), args.concurrency, args.per_host))
    print(f"fetched {fetched} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
