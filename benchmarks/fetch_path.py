"""Where the fetch workers' CPU over the bare loop goes: the same pages fetched three ways.

The small-page web (``--workload small``'s: 50 hosts x 200 pages of 8 KB, 8 links each) is
served by ``benchmarks.web`` in a process of its own, and the same spider-feed batches (128
URLs, 16 hosts x 8) are fetched, in turn, by:

- ``bare``: the bare loop's per-page work (``benchmarks.bare``: aiohttp, link extraction,
  canonicalisation and a fingerprint per link), in this process, no frontier;
- ``inprocess``: raycrawl's fetch path (``raycrawl.fetch.batch.fetch_hosts``, three batches at
  a time over one session and request limit, as a fetch worker runs them), in this process;
- ``actor``: the same in a real ``FetchWorker`` actor of a local Ray, fed by this driver (the
  parts streamed back and read here, as a DB worker reads them), its process's CPU.

What each costs a page, and the ratios to ``bare``, say what raycrawl's fetch code costs
(``inprocess``), then what Ray's actor runtime adds (``actor``); the rest of a crawl's fetch
workers' CPU a page (``benchmarks.profile``) is what sharing two cores with the crawl's other
processes costs.  Rounds alternate the three; prints the medians and writes
``results/fetch-path.json``::

    .venv/bin/python -m benchmarks.fetch_path --batches 60 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import aiohttp
import pyarrow as pa

from benchmarks.measure import own_cpu_s
from benchmarks.queue_cut import save
from benchmarks.run import WORKLOADS, WebServer
from benchmarks.web import WebSpec, host_ip
from raycrawl.config import CrawlConfig
from raycrawl.fetch.extract import extract_links
from raycrawl.fetch.options import FetchOptions
from raycrawl.formats.schemas import FetchRequest
from raycrawl.urls import url_info

WAYS = ("bare", "inprocess", "actor")
# A 128-URL batch: the crawl's shape until stop 41 (batch_size 128, host_batch_cap 8; now 512
# and 32), kept so that its numbers compare with stop 37's (results/fetch-path.json).
HOSTS_PER_BATCH, PER_HOST = 16, 8
IN_FLIGHT = 3  # batches a fetch worker runs at once (raycrawl.coordinator.sharing)
PARTITIONS = 64


def feeds(spec: WebSpec, port: int, batches: int) -> list[pa.RecordBatch]:
    """``batches`` spider-feed batches over the web's hosts in turn, each page once."""
    out = []
    for b in range(batches):
        rows = []
        for j in range(HOSTS_PER_BATCH):
            turn = b * HOSTS_PER_BATCH + j
            host, first = turn % spec.hosts, turn // spec.hosts * PER_HOST
            for i in range(first, first + PER_HOST):
                info = url_info(f"http://{host_ip(host)}:{port}/p/{i % spec.pages}", PARTITIONS)
                rows.append(FetchRequest(info.url, info.fingerprint, info.host, info.partition,
                                         1))
        out.append(FetchRequest.to_batch(rows))
    return out


def options(concurrency: int) -> FetchOptions:
    return FetchOptions.from_config(CrawlConfig(
        partitions=PARTITIONS, allow_network=("127.0.0.0/8",), robots=False,
        fetch_concurrency=concurrency, per_host=1, delay_s=0.0))


async def _bare(batches: list[pa.RecordBatch], concurrency: int) -> tuple[int, float]:
    urls = [u for b in batches for u in b.column("url").to_pylist()]
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=20)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=1)
    seen: set[int] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def fetch(url: str) -> None:
            async with session.get(url, allow_redirects=False) as resp:
                body = await resp.read()
                links = extract_links(url, body, resp.headers.get("Content-Type"))
            seen.update(url_info(link, 1).fingerprint for link in links)

        slots = asyncio.Semaphore(concurrency)

        async def one(url: str) -> None:
            async with slots:
                await fetch(url)

        started = own_cpu_s()
        await asyncio.gather(*(one(u) for u in urls))
        return len(urls), own_cpu_s() - started


async def _inprocess(batches: list[pa.RecordBatch], concurrency: int) -> tuple[int, float]:
    from raycrawl.fetch.batch import fetch_hosts
    from raycrawl.fetch.client import open_session
    from raycrawl.fetch.limits import RequestLimit

    opts = options(concurrency)
    session, limit = open_session(opts), RequestLimit(opts.concurrency, opts.per_ip)
    pages = 0
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(feed: pa.RecordBatch) -> None:
        nonlocal pages
        async with slots:
            async for _, part in fetch_hosts(feed, opts, session, limit):
                pages += part.pages.num_rows

    started = own_cpu_s()
    await asyncio.gather(*(one(b) for b in batches))
    spent = own_cpu_s() - started
    await session.close()
    return pages, spent


def _actor(batches: list[pa.RecordBatch], concurrency: int) -> tuple[int, float]:
    import psutil
    import ray

    from actors.fetch import FetchWorker

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        worker = ray.remote(FetchWorker).options(num_cpus=1, max_concurrency=8).remote(
            options(concurrency), "bench/fetcher-0")
        proc = psutil.Process(ray.get(worker.__ray_call__.remote(
            lambda self: __import__("os").getpid())))

        def cpu() -> float:
            times = proc.cpu_times()
            return times.user + times.system

        async def run() -> int:
            pages = 0
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def one(feed: pa.RecordBatch) -> None:
                nonlocal pages
                async with slots:
                    async for ref in worker.fetch.remote(feed):
                        _, result = await ref
                        pages += result[0].num_rows

            await asyncio.gather(*(one(b) for b in batches))
            return pages

        started = cpu()
        pages = asyncio.run(run())
        return pages, cpu() - started
    finally:
        ray.shutdown()


def one_round(spec: WebSpec, batches: int, concurrency: int) -> dict[str, float]:
    """ms of CPU a page, each way, over a web served afresh for each (its hits start at 0)."""
    found = {}
    for way in WAYS:
        web = WebServer(spec)
        try:
            port = int(web.info["seed"].rsplit(":", 1)[1].split("/")[0])
            work = feeds(spec, port, batches)
            if way == "actor":
                pages, spent = _actor(work, concurrency)
            else:
                pages, spent = asyncio.run((_bare if way == "bare" else _inprocess)(
                    work, concurrency))
            fetched = web.stats().get("fetches", 0)
        finally:
            web.close()
        if pages != len(work) * len(work[0]) or fetched < pages:
            raise RuntimeError(f"{way}: {pages} pages read, {fetched} served")
        found[way] = 1000 * spent / pages
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32,
                        help="requests in flight (a crawl's fetch worker: 64 over two)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "fetch-path.json"))
    args = parser.parse_args(argv)
    small = WORKLOADS["small"]
    spec = WebSpec(hosts=small["hosts"], pages=small["pages"], page_bytes=1000 * small["page_kb"],
                   out_degree=small["links"])
    rounds = []
    for r in range(args.rounds):
        started = time.monotonic()
        rounds.append(one_round(spec, args.batches, args.concurrency))
        print(f"round {r + 1}: " + ", ".join(f"{w} {rounds[-1][w]:.3f}" for w in WAYS)
              + f" ms/page ({time.monotonic() - started:.0f} s)", flush=True)
    medians = {w: statistics.median(r[w] for r in rounds) for w in WAYS}
    result: dict[str, Any] = {
        "spec": vars(spec), "batches": args.batches, "concurrency": args.concurrency,
        "rounds": rounds, "ms_per_page": medians,
        "ratio_to_bare": {w: medians[w] / medians["bare"] for w in WAYS}}
    print("median ms of CPU a page: " + ", ".join(
        f"{w} {medians[w]:.3f} ({result['ratio_to_bare'][w]:.2f}x bare)" for w in WAYS))
    save(args.out, result)


if __name__ == "__main__":
    main()
