"""Crawls sharing the session's Ray (2 CPUs): a second crawl gets half the fetch workers at
once, the first gives one back without a fault, and --fetch-workers caps a crawl."""

from __future__ import annotations

import time

import pytest

from raycrawl import Crawl
from raycrawl.testing.synthweb import SyntheticWeb

pytestmark = pytest.mark.ray

SLOW = {"delay_s": 0.2, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 16, "retry_backoff_s": 0.05}


def held(crawl: Crawl) -> tuple[int, int]:
    """(fetch workers granted, fetch workers its DB workers hold)."""
    s = crawl.stats()
    return s.fetch_workers, sum(w.fetch_workers for w in s.db_workers)


def wait_for(what, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_second_crawl_gets_half_the_cpus_and_the_first_gives_one_back(ray_session, tmp_path):
    """Two crawls on 2 CPUs hold one fetch worker each; a third waits, says so, and gets a
    CPU when one ends; every crawl finishes whole, and a share given back is no fault."""
    # The first two crawls must still run when the third starts: 60 pages a host at 0.2 s
    # take 12 s at least (30 did not always outlast three crawls' start on a loaded machine).
    webs = [SyntheticWeb(hosts=6, pages_per_host=p, seed=s).start()
            for p, s in ((60, 21), (60, 22), (30, 24))]
    try:
        first = Crawl(seeds=[webs[0].seed_url], out=str(tmp_path / "a"), **SLOW).start()
        wait_for(lambda: held(first) == (2, 2))  # alone: every CPU
        second = Crawl(seeds=[webs[1].seed_url], out=str(tmp_path / "b"), **SLOW).start()
        wait_for(lambda: held(first) == (1, 1) and held(second) == (1, 1))
        third = Crawl(seeds=[webs[2].seed_url], out=str(tmp_path / "c"), **SLOW).start()
        wait_for(lambda: third.stats().waiting == "waiting for CPUs: 3 crawls share 2")
        assert held(third) == (0, 0) and third.stats().fetched == 0
        crawls = (first, second, third)
        finals = [c.wait(timeout=240) for c in crawls]
        for crawl, final, web in zip(crawls, finals, webs):
            assert final.phase == "finished"
            assert sorted(crawl.pages().column("url").to_pylist()) == sorted(web.reachable())
            # A smaller share retires workers once their batches end: nothing is a fault.
            assert sum(w.fetch_faults for w in final.db_workers) == 0
    finally:
        for web in webs:
            web.stop()


def test_fetch_workers_caps_a_crawl(ray_session, tmp_path):
    web = SyntheticWeb(hosts=4, pages_per_host=6, seed=23).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), fetch_workers=1,
                      db_workers=2, **SLOW).start()
        seen = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            s = crawl.stats()
            seen.add(sum(w.fetch_workers for w in s.db_workers))
            assert s.fetch_workers <= 1
            if s.phase.terminal or (s.fetched and not s.queued and not s.in_flight_batches):
                break
            time.sleep(0.1)
        final = crawl.wait(timeout=180)
        assert max(seen) == 1, seen
        assert final.phase == "finished"
        assert sorted(crawl.pages().column("url").to_pylist()) == sorted(web.reachable())
    finally:
        web.stop()
