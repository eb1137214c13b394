"""Crawls sharing the session's Ray (2 CPUs): a second crawl gets half the fetch workers at
once, the first gives one back without a fault, and --fetch-workers caps a crawl."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
import ray

from actors.fetch import NotLending
from actors.options import NAMESPACE
from raycrawl import Crawl
from raycrawl.coordinator.reports import CrawlStatus
from raycrawl.formats.schemas import feed_batch
from raycrawl.testing.synthweb import SyntheticWeb
from raycrawl.urls import url_info

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


def test_fetch_workers_caps_a_crawl_and_its_db_workers_share_them(ray_session, tmp_path):
    """One fetch worker for two DB workers: it stays with one of them, and the other runs
    its batches on it as a guest; nobody starts a second one, and every page comes once."""
    web = SyntheticWeb(hosts=4, pages_per_host=6, seed=23).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), fetch_workers=1,
                      db_workers=2, **SLOW).start()
        seen, guests = set(), 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            s = crawl.stats()
            seen.add(sum(w.fetch_workers for w in s.db_workers))
            assert s.fetch_workers <= 1
            guests = max(guests, sum(w.guest_calls for w in s.db_workers))
            if s.phase.terminal or (s.fetched and not s.queued and not s.in_flight_batches):
                break
            time.sleep(0.1)
        final = crawl.wait(timeout=180)
        assert max(seen) == 1, seen
        assert final.phase == "finished"
        assert sorted(crawl.pages().column("url").to_pylist()) == sorted(web.reachable())
        assert sum(w.fetch_workers_started for w in final.db_workers) == 1
        assert guests > 0 and sum(w.fetch_faults for w in final.db_workers) == 0
        assert all(w.fetched > 0 for w in final.db_workers)  # both had hosts to fetch
    finally:
        web.stop()


def test_a_lender_killed_under_its_guests_batches_loses_nothing(ray_session, tmp_path):
    """The DB worker that holds the crawl's one fetch worker is killed while its peer's
    batches run on it: the peer runs them again (a lender's fault is never the URLs'), and
    every page has one row, none an error."""
    web = SyntheticWeb(hosts=6, pages_per_host=14, seed=29, latency_s=0.02).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), fetch_workers=1,
                      db_workers=2, **{**SLOW, "delay_s": 0.05, "retries": 0}).start()
        s = status_when(crawl, lambda s: any(w.guest_calls and w.in_flight for w in s.db_workers),
                     "guest batch under way")
        lender = next(i for i, w in enumerate(s.db_workers) if w.fetch_workers)
        ray.kill(ray.get_actor(f"{crawl.crawl_id}/db-worker-{lender}", namespace=NAMESPACE),
                 no_restart=False)
        final = crawl.wait(timeout=240)
        assert final.phase == "finished", final.reason
        urls = crawl.pages().column("url").to_pylist()
        assert len(urls) == len(set(urls)) and set(urls) == set(web.reachable())
        assert final.errors == 0, final.error_kinds
    finally:
        web.stop()


def test_a_lender_that_stops_lending_refuses_guests_and_their_batches_run_once(ray_session,
                                                                               tmp_path):
    """A lender that pauses (as a retiring DB worker drains) refuses its peer's next batches
    before fetching anything: the peer runs them on a fetch worker of its own, and no URL is
    requested twice (a batch taken during a drain ran on fetch workers the drain let go, and
    the requests in flight were sent again)."""
    web = SyntheticWeb(hosts=6, pages_per_host=40, seed=31, latency_s=0.02).start()
    try:
        # The coordinator starts a DB worker it finds not running again (as after a restart):
        # a reconcile pass a second, not 20, keeps the test's pause in place long enough
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), fetch_workers=1,
                      db_workers=2, robots=False, retries=0,
                      **{**SLOW, "delay_s": 0.05, "poll_interval_s": 1.0}).start()
        # The borrower still has two batches' worth of URLs queued, so it cuts again after the
        # pause (a web of 14 pages a host was crawled whole before the pause took effect)
        s = status_when(crawl, lambda s: any(w.guest_calls and w.queued >= 16
                                             for w in s.db_workers),
                        "a guest batch with work left behind it")
        lender_index = next(i for i, w in enumerate(s.db_workers) if w.fetch_workers)
        assert s.db_workers[1 - lender_index].guest_calls, s.db_workers
        lender = ray.get_actor(f"{crawl.crawl_id}/db-worker-{lender_index}",
                               namespace=NAMESPACE)
        # Refused before anything is fetched (paused and asked in one step of the lender's
        # event loop: a reconcile pass cannot start it again in between)
        probe = web.origin(0) + "/never-linked"
        refusal = ray.get(lender.__ray_call__.remote(
            pause_then_ask_as_guest, feed_batch([url_info(probe, 16)])))
        assert refusal is not None and "lends no fetch worker" in refusal
        assert probe.removeprefix("http://") not in web.hits
        # The peer's batches go elsewhere meanwhile (refused, or on a fetch worker the
        # coordinator gave the peer once the paused lender let its own go)
        peer = 1 - lender_index

        def peer_went_elsewhere(s: CrawlStatus) -> bool:
            if s.db_workers[lender_index].running:  # started again by the coordinator
                ray.get(lender.pause.remote())
            return bool(s.db_workers[peer].guest_refused or s.db_workers[peer].fetch_workers)

        status_when(crawl, peer_went_elsewhere, "batch of the peer after the pause")
        ray.get(lender.start.remote(None))
        final = crawl.wait(timeout=180)
        assert final.phase == "finished", final.reason
        assert final.errors == 0, final.error_kinds
        assert web.unexpected_hits(web.reachable()) == {}
        assert sorted(crawl.pages().column("url").to_pylist()) == sorted(web.reachable())
    finally:
        web.stop()


def pause_then_ask_as_guest(worker: Any, feed: pa.RecordBatch) -> str | None:
    """In a DB worker's event loop, without yielding: pause it, then take the first step of
    a guest batch; the refusal's message (None: the batch was taken, and is cancelled before
    its first request)."""
    worker.pause()
    step = worker.fetch_as_guest(feed).__anext__()
    try:
        step.send(None)
    except NotLending as exc:
        return str(exc)
    finally:
        step.close()
    return None


def status_when(crawl: Crawl, seen: Callable[[CrawlStatus], bool], what: str) -> CrawlStatus:
    deadline = time.monotonic() + 120
    while not seen(s := crawl.stats()):
        assert not s.phase.terminal and time.monotonic() < deadline, f"no {what} before the end"
        time.sleep(0.05)
    return s
