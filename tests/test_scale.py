"""Rescaling a running crawl: partitions move between workers while it fetches, and every
invariant holds across the moves — each reachable page fetched once with one row, no host
above ``per_host`` in flight or closer than ``delay`` between request starts (the test web
records both), ``max_pages`` exact — and any actor killed mid-move loses nothing.

The move protocol's crash points, step by step and without Ray, are ``tests/test_rescale.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from raycrawl import Crawl
from raycrawl.api import read_status
from raycrawl.testing import faults
from raycrawl.testing.synthweb import SyntheticWeb

pytestmark = pytest.mark.ray

# Politeness bounds the crawls' pace (a host: a page every DELAY_S and more), so they run long
# enough to be rescaled on any machine: ~1,070 pages of 12 hosts take over 14 s.
DELAY_S = 0.15
SETTINGS = {"delay_s": DELAY_S, "per_host": 1, "allow_network": ("127.0.0.0/8",),
            "poll_interval_s": 0.05, "robots": False, "retries": 0, "host_batch_cap": 2,
            "db_workers": 1, "strategy_workers": 1}


def run_until(crawl: Crawl, pages: int) -> None:
    deadline = time.monotonic() + 120
    while crawl.stats()["fetched"] < pages:
        assert time.monotonic() < deadline, "the crawl did not get going"
        time.sleep(0.05)


def assert_whole(web: SyntheticWeb, crawl: Crawl, stats, once: bool = True,
                 delay_s: float = DELAY_S) -> None:
    """Finished, every reachable page with one row, none an error; ``once``: each fetched
    once, and politely."""
    assert stats["phase"] == "finished", stats.get("reason")
    urls = crawl.pages().column("url").to_pylist()
    assert len(urls) == len(set(urls)), "a URL has two rows"
    assert set(urls) == set(web.reachable()), "a reachable URL is missing"
    assert stats["fetched"] == len(urls) and stats["errors"] == 0, stats["error_kinds"]
    with web.lock:
        hits = dict(web.hits)
    if once:
        assert max(hits.values()) == 1, [u for u, n in hits.items() if n > 1]
    for host in range(web.hosts):
        assert web.max_active.get(host, 0) <= 1, f"host {host}: two requests at once"
        gap = web.min_gap_s(host)
        assert gap is None or gap >= delay_s - 1e-3, f"host {host}: requests {gap} s apart"


def owned(workers) -> list[int]:
    return [w["partitions_owned"] for w in workers]


def test_a_crawl_scaled_up_then_down_while_it_runs_fetches_every_page_once_politely(
        ray_session, tmp_path):
    web = SyntheticWeb(hosts=20, pages_per_host=100, seed=61, latency_s=0.01).start()
    try:
        assert len(web.reachable()) >= 3400
        out = tmp_path / "out"
        # At most 100 pages/s: 34 s at least for the 3,500 pages.  The two rescales took 27 s
        # on a loaded CI machine; with 60 pages a host at 0.1 s (11 s at least) the crawl
        # ended before the scale-down once its 4 DB workers all fetched (fetch workers lent
        # since stop 38: before, two of them waited for a fetch worker at a time).
        crawl = Crawl(seeds=[web.seed_url], out=str(out), **{**SETTINGS, "delay_s": 0.2}).start()
        run_until(crawl, 100)
        # Up, through the CLI: 1 + 1 -> 4 + 2; it returns once every move is done.
        up = subprocess.run(
            [sys.executable, "-m", "raycrawl.cli", "scale", "--state", str(out / "state"),
             "--db-workers", "4", "--strategy-workers", "2", "--address", ray_session],
            capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        assert "rescaled" in up.stdout
        stats = crawl.stats()
        assert stats["phase"] == "running", "the crawl ended before it was scaled down"
        assert len(stats["db_workers"]) == 4 and len(stats["strategy_workers"]) == 2
        assert sum(owned(stats["db_workers"])) == 256 and min(owned(stats["db_workers"])) > 0
        assert sum(owned(stats["strategy_workers"])) == 256
        assert min(owned(stats["strategy_workers"])) > 0
        assert stats["moving"] == "" and stats["moves_left"] == 0
        # Down, through the API: 4 + 2 -> 2 + 1, the retired workers' pages still counted.
        fetched = stats["fetched"]
        down = crawl.scale(db_workers=2, strategy_workers=1, timeout=300)
        assert len(down["db_workers"]) == 2 and len(down["strategy_workers"]) == 1
        assert sum(owned(down["db_workers"])) == 256 and down["fetched"] >= fetched
        assert down["phase"] == "running", "the crawl ended before the scale-down was done"
        stats = crawl.wait(timeout=300, interval_s=0.2)
        assert_whole(web, crawl, stats, delay_s=0.2)
        assert len(stats["db_workers"]) == 2
    finally:
        web.stop()


def small_web(seed: int) -> SyntheticWeb:
    return SyntheticWeb(hosts=12, pages_per_host=50, seed=seed, latency_s=0.01).start()


def test_resumed_with_more_workers_it_loses_nothing_with_actors_killed_mid_move(
        ray_session, tmp_path):
    """A stopped 2 + 1 crawl resumed with 4 DB workers and 2 strategy workers; as its
    partitions move, a DB worker is killed as it copies partitions away (the first DB move's
    source), the coordinator at a move's commit point, a strategy worker as it takes
    partitions in: each restarts, the moves are carried forward, the crawl ends whole."""
    web = small_web(seed=63)
    out = tmp_path / "out"
    state = str(out / "state")
    points = ("db-worker.exported", "rescale.committed", "strategy-worker.adopted")
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(out),
                      **{**SETTINGS, "db_workers": 2, "partitions": 32}).start()
        run_until(crawl, 500)  # (the 570 pages left take 6 s at least: the rescale fits)
        assert crawl.stop()["phase"] == "stopped"
        for point in points:
            faults.arm(state, point)
        # What `raycrawl resume --state DIR --db-workers 4 --strategy-workers 2` does.
        resumed = Crawl.attach(state)
        resumed.scale(db_workers=4, strategy_workers=2, wait=False)
        final = resumed.wait(timeout=300, interval_s=0.2)
        assert final["phase"] == "finished", final.get("reason")
        assert [p for p in points if not faults.fired(state, p)] == []
        stats = read_status(state)  # (the resumed crawl's last status)
        assert stats.generation == 2 and stats.moves_left == 0 and not stats.moving
        assert owned(stats.db_workers) and sum(owned(stats.db_workers)) == 32
        assert len(stats.db_workers) == 4 and min(owned(stats.db_workers)) > 0
        assert len(stats.strategy_workers) == 2 and min(owned(stats.strategy_workers)) > 0
        assert_whole(web, crawl, stats, once=False)  # (a killed worker's batches run again)
    finally:
        web.stop()


def test_max_pages_stays_exact_across_a_rescale(ray_session, tmp_path):
    """3 DB workers down to 1 (the retired workers' pages and budget still count) while 1
    strategy worker goes up to 2.  The rescale must end before the budget does: 8 partitions
    (10 small moves, 1 s here) against 440 pages at 0.3 s a host (11 s at least over its 12
    hosts).  With 32 partitions at 0.15 s it was 14 moves in 6 s on a loaded CI machine
    against 5.5 s of crawl: the crawl ended first."""
    web = small_web(seed=65)
    max_pages = 500  # of 1,074
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), max_pages=max_pages,
                      **{**SETTINGS, "db_workers": 3, "partitions": 8, "delay_s": 0.3}).start()
        run_until(crawl, 60)
        scaled = crawl.scale(db_workers=1, strategy_workers=2, timeout=300)
        assert scaled["phase"] == "running", "the crawl ended before the rescale was done"
        assert len(scaled["db_workers"]) == 1 and len(scaled["strategy_workers"]) == 2
        stats = crawl.wait(timeout=300, interval_s=0.2)
        assert stats["phase"] == "finished" and stats["reason"] == "max pages reached"
        urls = crawl.pages().column("url").to_pylist()
        assert len(urls) == len(set(urls)) == max_pages == stats["fetched"]
    finally:
        web.stop()
