"""The crawl's --max-rate over its DB workers together, measured at the server over 30 s
(the token bucket and its split, without Ray: tests/test_ratelimit.py)."""

from __future__ import annotations

import bisect
import time

import pytest

from raycrawl import Crawl
from raycrawl.testing.synthweb import SyntheticWeb

pytestmark = pytest.mark.ray

RATE = 20
WINDOW_S = 30.0  # 600 requests: a burst at either end moves the rate by 0.7 a second
# The bucket bounds when fetches start (a URL is cut with a token); the server sees a request
# later, after its batch reached a fetch worker and the server's own loop read it.  On a
# loaded machine those lags vary: a fetch started late and one started on time arrive in the
# same second.  Seen in CI: 42 in a second (a 3-node cluster test beside it), where the
# bucket allows 40.  So the busiest second is held to what the bucket allows in 1 s plus this.
LAG_S = 0.5


def test_max_rate_holds_a_crawl_of_many_hosts_with_two_db_workers(ray_session, tmp_path):
    """40 hosts that could take hundreds of pages a second (0.05 s apart each): the server
    sees 20 ± 2 a second over 30 s, never more than burst + 20 (+ LAG_S) in a second, and both
    DB workers fetch (the rate is the crawl's, split between them)."""
    web = SyntheticWeb(hosts=40, pages_per_host=40, seed=71).start()
    try:
        assert len(web.reachable()) > RATE * (WINDOW_S + 10)  # it cannot run out first
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), max_pages_per_s=RATE,
                      db_workers=2, delay_s=0.05, robots=False, retry_backoff_s=0.05,
                      allow_network=("127.0.0.0/8",), poll_interval_s=0.05).start()
        deadline = time.monotonic() + 60
        while not web.starts:
            assert time.monotonic() < deadline, "the crawl did not get going"
            time.sleep(0.05)
        first = min(min(times) for times in list(web.starts.values()))
        begin, end = first + 3.0, first + 3.0 + WINDOW_S  # (past the first links' discovery)
        while time.monotonic() < end + 0.5:
            assert not crawl.stats().phase.terminal, "the crawl ended before the window did"
            time.sleep(0.5)
        stats = crawl.stats()
        crawl.stop()
        starts = sorted(t for times in list(web.starts.values()) for t in times)
        rate = sum(begin <= t < end for t in starts) / WINDOW_S
        assert RATE - 2 <= rate <= RATE + 2, rate
        busiest = max(bisect.bisect_left(starts, s + 1.0) - i for i, s in enumerate(starts))
        # the burst (one second's worth) and a second's rate, at most
        assert busiest <= RATE + RATE * (1 + LAG_S), busiest
        assert all(w.fetched > 0 for w in stats.db_workers)
        assert sum(w.rate_s for w in stats.db_workers) == pytest.approx(RATE)
    finally:
        web.stop()


def test_auto_throttle_spaces_a_slow_hosts_requests_by_its_response_time(ray_session, tmp_path):
    """Answers that take 0.2 s, no delay: with --auto-throttle a host's next request starts
    at least 0.1 s after the previous answer (the learnt delay grows towards 0.2 s); without,
    right after it (the test web records the starts)."""
    web = SyntheticWeb(hosts=2, pages_per_host=6, seed=73, latency_s=0.2).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), auto_throttle=True,
                      delay_s=0.0, robots=False, allow_network=("127.0.0.0/8",),
                      poll_interval_s=0.05, retry_backoff_s=0.05).start()
        final = crawl.wait(timeout=120, interval_s=0.2)
        assert final.phase == "finished" and final.fetched == len(web.reachable())
        for host, times in web.starts.items():
            gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:])][2:]
            assert gaps and min(gaps) >= 0.2 + 0.1, (host, gaps)  # answer + learnt delay
    finally:
        web.stop()
