"""Trap limits, robots policies and decoding limits, without Ray."""

import gzip
import zlib

import pytest

from raycrawl.db_worker.robots import RobotsCache, RobotsKind, RobotsPolicy, agent_token, origin_of
from raycrawl.fetch.decoding import BodyDecoder, UnsupportedEncoding
from raycrawl.strategy_worker.traps import TrapGuard, path_template, repeated_segments


def test_repeated_path_segments_are_a_trap(store):
    guard = TrapGuard(store, 64, max_segment_repeats=3, max_query_variants=100,
                      max_pages_per_host=None)
    assert repeated_segments("/a/b/a/b/a/b/a") == 4
    assert guard.verdict("http://h.com/a/b/a/b/a/b/a", "h.com") == "trap"
    assert guard.verdict("http://h.com/a/b/a/b/a/b", "h.com") is None


def test_query_shape_limit_stops_an_infinite_calendar(store):
    guard = TrapGuard(store, 64, 3, max_query_variants=5, max_pages_per_host=None)
    verdicts = [guard.verdict(f"http://h.com/cal?day={d}", "h.com") for d in range(8)]
    assert verdicts == [None] * 5 + ["trap"] * 3
    # Another path, or other keys, is another shape.
    assert guard.verdict("http://h.com/cal?day=1&view=week", "h.com") is None
    assert guard.verdict("http://other.com/cal?day=99", "other.com") is None
    guard.flush()
    again = TrapGuard(store, 64, 3, max_query_variants=5, max_pages_per_host=None)
    assert again.verdict("http://h.com/cal?day=100", "h.com") == "trap"  # durable counts


def test_per_host_budget(store):
    guard = TrapGuard(store, 64, 3, 100, max_pages_per_host=2)
    assert [guard.verdict(f"http://h.com/{i}", "h.com") for i in range(3)] == [
        None, None, "host-budget"]
    assert guard.verdict("http://g.com/0", "g.com") is None


def test_host_hops_limit_and_seed_hosts_are_durable(store):
    guard = TrapGuard(store, 64, 3, 100, None, max_host_hops=1)
    guard.seed_hosts(["a.com", "a.com"])
    assert [guard.hops("a.com", 5), guard.hops("b.com", 5), guard.hops("b.com", 0)] == [0, 5, 0]
    assert guard.verdict("http://b.com/", "b.com", 1) is None
    assert guard.verdict("http://c.com/", "c.com", 2) == "trap"
    guard.flush()
    again = TrapGuard(store, 64, 3, 100, None, max_host_hops=1)
    assert again.hops("a.com", 3) == 0  # the seed hosts survive a restart
    off = TrapGuard(store, 64, 3, 100, None)
    assert off.hops("b.com", 7) == 7 and off.verdict("http://c.com/", "c.com", 99) is None


@pytest.mark.parametrize("status, kind", [(200, RobotsKind.RULES), (404, RobotsKind.ALLOW_ALL),
                                          (403, RobotsKind.ALLOW_ALL), (301, RobotsKind.ALLOW_ALL),
                                          (500, RobotsKind.UNAVAILABLE),
                                          (None, RobotsKind.UNAVAILABLE)])
def test_rfc9309_status_handling(status, kind):
    policy = RobotsPolicy.from_fetch(status, b"User-agent: *\nDisallow: /", 0.0, 100, 10)
    assert policy.kind is kind
    assert policy.allows("http://h.com/x", "raycrawl") is (kind is RobotsKind.ALLOW_ALL)
    assert policy.expires_at == (10 if kind is RobotsKind.UNAVAILABLE else 100)


def test_rules_bom_and_crawl_delay():
    body = "\ufeffUser-agent: raycrawl\nDisallow: /private\nCrawl-delay: 500\n".encode()
    policy = RobotsPolicy.from_fetch(200, body, 0.0, 100, 10)
    assert not policy.allows("http://h.com/private/1", "raycrawl")
    assert policy.allows("http://h.com/public", "raycrawl")
    assert policy.allows("http://h.com/private/1", "otherbot")
    assert policy.crawl_delay_s("raycrawl") == 60.0  # clamped


def test_robots_cache_is_durable_and_expires(store):
    cache = RobotsCache(store, 64)
    before = RobotsPolicy(RobotsKind.UNAVAILABLE, "", 990.0, 2, failing_since=980.0)
    cache.put("http://h.com", RobotsPolicy.from_fetch(500, b"", 1000.0, 100, 10, before))
    fresh = RobotsCache(store, 64)
    assert fresh.get("http://h.com", now=1005.0).failures == 3
    assert fresh.get("http://h.com", now=1039.0).failing_since == 980.0  # 10 s x 2**2
    assert fresh.get("http://h.com", now=1041.0) is None
    assert fresh.stored("http://h.com").failures == 3


def test_an_unreachable_robots_txt_backs_off_short_then_gives_up():
    """Tries at 0, 2, 6, 14, 30 s after the first failure (2 s doubling); the one after would
    start 62 s after it: past the 60 s bound, so the DB worker gives up there."""
    policy, starts = None, []
    now = 1000.0
    for _ in range(10):
        starts.append(now - 1000.0)
        policy = RobotsPolicy.from_fetch(None, b"", now, ttl_s=86400, retry_s=2.0,
                                         previous=policy)
        if policy.gave_up(60.0):
            break
        now = policy.expires_at
    assert starts == [0, 2, 6, 14, 30] and policy.failures == 5
    # Any answer ends the round: the next failure starts a new one.
    ok = RobotsPolicy.from_fetch(404, b"", now, 86400, 2.0, policy)
    assert ok.kind is RobotsKind.ALLOW_ALL and ok.failures == 0
    again = RobotsPolicy.from_fetch(503, b"", now + 1, 86400, 2.0, ok)
    assert (again.failures, again.failing_since, again.expires_at) == (1, now + 1, now + 3)


def test_origin_and_agent():
    assert origin_of("http://h.com:8080/a/b?c") == "http://h.com:8080"
    assert origin_of("https://[::1]/x") == "https://[::1]"
    assert agent_token("raycrawl/0.1 (+https://x)") == "raycrawl"


def test_gzip_bomb_stops_at_the_cap():
    bomb = gzip.compress(b"\0" * 50_000_000)
    decoder = BodyDecoder("gzip", limit=1_000_000)
    produced = 0
    for i in range(0, len(bomb), 65536):
        produced += len(decoder.feed(bomb[i:i + 65536]))
        if decoder.over_limit:
            break
    assert decoder.over_limit and produced == 1_000_001


@pytest.mark.parametrize("encoder", [zlib.compress, lambda d: zlib.compress(d)[2:-4]])
def test_deflate_zlib_and_raw(encoder):
    data = b"<html>" + b"x" * 1000
    assert BodyDecoder("deflate", 10_000).feed(encoder(data)) == data


def test_unknown_encoding_is_refused():
    with pytest.raises(UnsupportedEncoding):
        BodyDecoder("br", 100)
    assert BodyDecoder("identity", 3).feed(b"abcdef") == b"abcd"


def test_a_calendar_in_the_path_is_one_template_and_capped(store):
    assert path_template("/cal/2020/1") == path_template("/cal/1999/12") == "/cal/{n}/{n}"
    assert path_template("/s/3f2504e0-4f89-11d3-9a0c-0305e82c3301/x") == "/s/{h}/x"
    assert path_template("/item/5f3e2a9b11") == "/item/{h}"
    assert path_template("/about/deadbeef") == "/about/deadbeef"  # a word, not an id
    assert path_template("/2020-01-31/post-7.html") == "/{n}-{n}-{n}/post-{n}.html"
    guard = TrapGuard(store, 64, 3, 100, None, max_path_variants=4, max_path_segments=6)
    verdicts = [guard.verdict(f"http://h.com/cal/{2000 + i}/{i % 12}", "h.com")
                for i in range(6)]
    assert verdicts == [None] * 4 + ["trap"] * 2
    assert guard.verdict("http://h.com/cal/2020/1?view=day", "h.com") == "trap"  # same path
    assert guard.verdict("http://g.com/cal/2020/1", "g.com") is None  # another host
    assert guard.verdict("http://h.com/about", "h.com") is None
    assert guard.verdict("http://h.com/a/b/c/d/e/f/g", "h.com") == "trap"  # 7 segments
    assert guard.verdict("http://h.com/a/b/c/d/e/f", "h.com") is None
