"""What rendering costs: pages/s of one browser against the plain fetch path on the same
pages, and the renderer's memory over a long run.

The pages are ``tests/jsweb.py``'s (a front page and pages whose links an external script
writes), on ``--hosts`` loopback hosts; each run fetches ``--pages`` URLs through the crawl's
own fetch path (``fetch_hosts``, batches of 100 URLs, 20 hosts side by side), once plainly and
once rendered by one browser (``render_concurrency`` pages at once, replaced every
``--restart`` pages).  Every 100 rendered pages it samples the memory (PSS) of the browser's
processes (Chromium and its renderers, Playwright's driver) and of this process.

    .venv/bin/python -m benchmarks.render --pages 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import psutil

from raycrawl.config import CrawlConfig
from raycrawl.fetch.batch import fetch_hosts, local_renderer
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.schemas import FetchOutcome, FetchRequest
from raycrawl.urls import url_info
from tests.jsweb import JSWeb

BATCH = 100
RESULTS = os.path.join(os.path.dirname(__file__), "results", "render.json")


def urls(web: JSWeb, n: int) -> list[str]:
    pages = [web.origin(a) + (f"/p/{i}" if i >= 0 else "/") for i in range(-1, web.pages)
             for a in web.addresses]
    return [pages[i % len(pages)] for i in range(n)]


def pss_mb(pids: list[int]) -> float:
    """Proportional set size (a page shared by n processes counts 1/n to each): summed over
    processes, unlike RSS, it does not count Chromium's shared pages once per process."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def browser_tree() -> list[int]:
    """Playwright's driver and the browsers under it (children of this process)."""
    return [p.pid for p in psutil.Process().children(recursive=True)]


async def run(all_urls: list[str], opts: FetchOptions, render: bool,
              samples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    renderer = local_renderer(opts) if render else None
    started, cpu0 = time.monotonic(), time.process_time()
    done = rendered = errors = 0
    try:
        for at in range(0, len(all_urls), BATCH):
            rows = []
            for url in all_urls[at:at + BATCH]:
                info = url_info(url, opts.partitions)
                rows.append(FetchRequest(info.url, info.fingerprint, info.host, info.partition, 0))
            parts = [p async for _, p in fetch_hosts(FetchRequest.to_batch(rows), opts,
                                                     renderer=renderer)]
            pages = FetchOutcome.from_batch(FetchResult.concat(parts).pages)
            done += len(pages)
            rendered += sum(p.rendered for p in pages)
            errors += sum(p.error is not None for p in pages)
            if samples is not None:
                samples.append({"pages": done, "browser_pss_mb": round(pss_mb(browser_tree()), 1),
                                "python_pss_mb": round(pss_mb([os.getpid()]), 1),
                                "processes": len(browser_tree())})
    finally:
        launches = renderer.browser.launches if renderer and renderer.browser else 0
        if renderer is not None:
            await renderer.close()
    wall = time.monotonic() - started
    return {"pages": done, "rendered": rendered, "errors": errors, "wall_s": round(wall, 2),
            "pages_per_s": round(done / wall, 1),
            "cpu_ms_per_page_python": round((time.process_time() - cpu0) * 1000 / done, 2),
            "browser_launches": launches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--restart", type=int, default=200, help="pages before a new browser")
    parser.add_argument("--concurrency", type=int, default=4, help="pages at once a browser")
    args = parser.parse_args()
    web = JSWeb(tuple(f"127.0.0.{i + 1}" for i in range(args.hosts)), pages=20).start()
    try:
        config = CrawlConfig(allow_network=("127.0.0.0/8",), robots=False,
                             browser_restart_pages=args.restart,
                             render_concurrency=args.concurrency)
        plain_opts = FetchOptions.from_config(config)
        render_opts = FetchOptions.from_config(config.replace(render=True))
        all_urls = urls(web, args.pages)
        plain = asyncio.run(run(all_urls, plain_opts, False))
        samples: list[dict[str, Any]] = []
        rendered = asyncio.run(run(all_urls, render_opts, True, samples))
    finally:
        web.stop()
    out = {"plain": plain, "rendered": rendered, "samples": samples,
           "render_cost": round(plain["pages_per_s"] / rendered["pages_per_s"], 1),
           "args": vars(args)}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"plain:    {plain['pages_per_s']} pages/s, {plain['errors']} errors")
    print(f"rendered: {rendered['pages_per_s']} pages/s by one browser "
          f"({rendered['rendered']} rendered, {rendered['errors']} errors, "
          f"{rendered['browser_launches']} launches) — a render costs "
          f"{out['render_cost']}x a plain fetch")
    print("PSS (MB) every 100 pages: browser " + " ".join(
        str(round(s["browser_pss_mb"])) for s in samples) + "; python " + " ".join(
        str(round(s["python_pss_mb"])) for s in samples))


if __name__ == "__main__":
    main()
