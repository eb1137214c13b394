"""How long a spider-feed batch may take to fetch: the bound a DB worker puts on a fetch
worker's call (``actors.fetch.FetchPool``).  Apart from the fetch path, so that a DB worker
never imports it (aiohttp, the parsers, the browser: they load in the fetch workers only).
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from raycrawl.db_worker.robots import MAX_ROBOTS_REDIRECTS
from raycrawl.fetch.options import FetchOptions
from raycrawl.render.spec import CRASH_TRIES, LAUNCH_TIMEOUT_S


def feed_bound_s(feed: pa.RecordBatch, opts: FetchOptions) -> float | None:
    """How long fetching ``feed`` can take at most: its hosts run side by side, each host's
    URLs one after another, each request within ``total_timeout_s`` plus its host's delay,
    after up to six robots.txt requests, plus its render timeout if it may be rendered; with
    a spider, plus every URL's callback at its bound, in turn (a worker runs one callback at
    a time), and the renders waiting for a browser's pages.  None when requests have no total
    timeout."""
    if not opts.total_timeout_s or feed.num_rows == 0:
        return None
    per_host: dict[str, float] = defaultdict(float)
    robots = MAX_ROBOTS_REDIRECTS + 1
    renders = render_bounds_s(feed, opts)
    for host, delay, needed, render in zip(feed.column("host").to_pylist(),
                                           feed.column("delay_s").to_pylist(),
                                           feed.column("robots_needed").to_pylist(), renders):
        if needed and host not in per_host:
            per_host[host] += robots * opts.total_timeout_s + delay
        per_host[host] += opts.total_timeout_s + delay + render
    callbacks = 0.0 if opts.spider is None else feed.num_rows * (opts.callback_timeout_s + 1.0)
    # With per_ip, hosts on one address take turns: all of them, at worst.
    hosts = sum(per_host.values()) if opts.per_ip is not None else max(per_host.values())
    return hosts + callbacks + sum(renders) / opts.render_concurrency


def render_bounds_s(feed: pa.RecordBatch, opts: FetchOptions) -> list[float]:
    """Per URL of ``feed``, how long its render can take (0: not rendered): its render
    timeout and a browser's start, once more for each crash retry."""
    rule = opts.render
    packed = feed.column("render").to_pylist()
    if not rule.may_render and not any(packed):
        return [0.0] * feed.num_rows
    specs = (rule.spec_for(url, raw) for url, raw in zip(feed.column("url").to_pylist(), packed))
    return [0.0 if spec is None else (spec.timeout_s + LAUNCH_TIMEOUT_S) * CRASH_TRIES
            for spec in specs]
