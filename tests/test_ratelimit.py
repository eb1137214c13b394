"""The crawl's rate and burst as pure logic: the token bucket and its split between DB
workers (the crawl-wide check with Ray is in tests/test_rate.py)."""

from __future__ import annotations

import random

import pytest

from raycrawl.config import CrawlConfig, config_from_mapping
from raycrawl.db_worker.ratelimit import TokenBucket, crawl_rate, split_rate
from raycrawl.errors import ConfigError


def test_a_bucket_lets_rate_times_t_plus_burst_through_and_starts_empty():
    bucket = TokenBucket(10.0, 5.0, now=0.0)
    assert bucket.available(0.0) == 0 and bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.available(0.35) == 3
    bucket.take(3, 0.35)
    assert bucket.available(100.0) == 5  # never more than the burst held
    bucket.take(5, 100.0)
    bucket.give_back(2, 100.0)  # two URLs ended unrequested
    assert bucket.available(100.0) == 2
    bucket.give_back(50, 100.0)
    assert bucket.available(100.0) == 5


def test_a_bucket_driven_like_the_feed_loop_holds_the_rate():
    """Cuts of whatever is available at random moments over 60 s: the URLs taken stay within
    burst + rate x t in every window, and reach the rate over the whole."""
    rng = random.Random(3)
    bucket, now, taken = TokenBucket(20.0, 20.0, now=0.0), 0.0, []
    while now < 60.0:
        n = min(rng.randrange(1, 40), bucket.available(now))
        if n:
            bucket.take(n, now)
            taken += [now] * n
        now += max(bucket.wait_s(now), rng.uniform(0.001, 0.3))
    assert 20 * 60 - 20 <= len(taken) <= 20 * 60 + 20
    for start in range(59):
        assert sum(start <= t < start + 1 for t in taken) <= 20 + 20


def test_a_new_part_keeps_the_tokens_held_up_to_it():
    bucket = TokenBucket(10.0, 10.0, now=0.0)
    assert bucket.available(2.0) == 10
    bucket.set(1.0, 3.0, 2.0)
    assert bucket.available(2.0) == 3 and bucket.available(3.0) == 3
    bucket.set(0.0, 0.0, 3.0)  # no part: looks again after a while, takes nothing
    assert bucket.available(60.0) == 0 and bucket.wait_s(60.0) > 0


@pytest.mark.parametrize("wanting", [[True, True], [True, False, False], [False, False],
                                     [True, True, True, False], [True] * 7])
def test_the_parts_add_up_to_the_crawls_rate_and_burst(wanting):
    parts = split_rate(20.0, 14, wanting)
    assert sum(r for r, _ in parts) == pytest.approx(20.0)
    assert sum(b for _, b in parts) == pytest.approx(max(14, sum(wanting) or len(wanting)))
    if any(wanting):
        assert all((r > 0) == w for (r, _), w in zip(parts, wanting))
    else:
        assert len({r for r, _ in parts}) == 1


def test_a_burst_below_the_workers_gives_each_one_fetch():
    assert split_rate(2.0, 1, [True, True]) == [(1.0, 1.0), (1.0, 1.0)]


def test_the_rate_settings_and_their_errors():
    assert crawl_rate(CrawlConfig()) is None
    assert crawl_rate(config_from_mapping({"max-rate": 20})) == (20, 20)
    assert crawl_rate(config_from_mapping({"max_rate": 0.5, "burst": 3})) == (0.5, 3)
    assert crawl_rate(config_from_mapping({"max_rate": 0.2})) == (0.2, 1)
    for bad, word in (({"max_rate": 0}, "max_pages_per_s"), ({"max_rate": -1}, "> 0"),
                      ({"burst": 2}, "needs max_pages_per_s"),
                      ({"max_rate": 5, "burst": 0}, "burst"),
                      ({"max_rate": 5, "burst": 1.5}, "burst")):
        with pytest.raises(ConfigError, match=word):
            config_from_mapping(bad)
