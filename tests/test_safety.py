"""Politeness and safety end to end: a hostile web, robots.txt, per-host spacing."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from raycrawl import Crawl
from raycrawl.testing.synthweb import SyntheticWeb
from tests.hostile import (
    BADPORT,
    BROKEN,
    DEAD,
    DEAD_URLS,
    DRIP,
    FARM,
    FORBIDDEN,
    LINKED,
    MAIN,
    PLAIN,
    ROBOTS_SHAPES,
    RULES,
    UNREACHABLE_ROBOTS,
    HostileWeb,
)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def hostile_crawl(ray_session, tmp_path_factory):
    """One crawl of the hostile web, shared by the assertions below."""
    web = HostileWeb().start()
    out = tmp_path_factory.mktemp("hostile") / "out"
    try:
        crawl = Crawl(
            seeds=[web.origin(MAIN) + "/"], out=str(out), delay_s=0.0, poll_interval_s=0.05,
            partitions=8, db_workers=2, strategy_workers=2,
            allow_network=(f"{MAIN}/32", f"{RULES}/32", f"{BROKEN}/32", f"{PLAIN}/32",
                           f"{BADPORT}/32", f"{DEAD}/32", *(f"{a}/32" for a in FARM),
                           *(f"{a}/32" for a in ROBOTS_SHAPES.values()), f"{DRIP}/32",
                           f"{LINKED}/32"),
            # the drips are cut at 15 s: longer than their siblings' links may wait
            total_timeout_s=15.0, read_timeout_s=1.0, max_body_bytes=1024 * 1024,
            retries=1, retry_backoff_s=0.05,
            robots_retry_s=0.2, robots_give_up_s=3.0, robots_timeout_s=1.0,
            max_host_hops=2).start()
        samples = []  # every queued URL has a reason, all along
        while (stats := crawl.stats())["phase"] in ("starting", "running"):
            samples.append((stats["queued"], sum(stats["queued_by_reason"].values()),
                            dict(stats["queued_by_reason"])))
            assert stats["elapsed_s"] < 240, stats
            time.sleep(0.3)
        stats = crawl.wait(timeout=60, interval_s=0.3)
        rows = {r["url"]: r for r in crawl.pages().to_pylist()}
        yield web, stats, rows, samples
    finally:
        web.stop()


def row(rows, address, web, path):
    return rows[web.origin(address) + path]


def test_hostile_crawl_finishes_with_every_outcome_visible(hostile_crawl):
    web, stats, rows, _ = hostile_crawl
    assert stats["phase"] == "finished"
    kinds = stats["error_kinds"]
    for kind in ("redirect-loop", "too-many-redirects", "timeout", "too-large", "trap",
                 "blocked-address", "robots", "robots-unavailable"):
        assert kinds.get(kind, 0) >= 1, (kind, kinds)
    assert len(rows) == stats["rows_written"]  # one row per URL
    assert stats["elapsed_s"] < 120  # by itself, in under two minutes (about 25 s here)


def test_every_queued_url_has_a_reason_and_the_crawl_never_stalls(hostile_crawl):
    _, stats, _, samples = hostile_crawl
    assert any(queued for queued, _, _ in samples)
    for queued, reasons, by_reason in samples:
        assert reasons == queued, by_reason
    waits = {reason for *_, by_reason in samples for reason in by_reason}
    assert {"robots-retry", "host-busy"} <= waits, waits
    assert stats["stalls"] == 0
    assert stats["queued"] == 0 and stats["queued_by_reason"] == {}


def test_redirect_loop_and_long_chain_end(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    assert row(rows, MAIN, web, "/loop/a")["status"] == 302
    loop_b = row(rows, MAIN, web, "/loop/b")
    assert loop_b["error"] == "redirect-loop"
    assert loop_b["redirect_chain"] == [web.origin(MAIN) + "/loop/a"]
    assert len(web.hits(MAIN, "/loop/a")) == 1  # the loop was not followed back
    last = row(rows, MAIN, web, "/chain/10")
    assert last["error"] == "too-many-redirects" and len(last["redirect_chain"]) == 10
    assert web.origin(MAIN) + "/chain/11" not in rows


def test_slow_drip_endless_body_and_bomb_are_cut_off(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    drip = row(rows, MAIN, web, "/drip")
    assert (drip["status"], drip["error"]) == (200, "timeout")
    assert len(web.hits(MAIN, "/drip")) == 1  # it answers, too slowly: not retried
    assert row(rows, MAIN, web, "/endless")["error"] == "too-large"
    bomb = row(rows, MAIN, web, "/bomb")
    assert bomb["error"] == "too-large" and bomb["size_bytes"] == 1024 * 1024


@pytest.mark.parametrize("shape", ["/calendar?", "/cal/", "/trap/calendar/"])
def test_a_calendar_costs_about_50_requests_by_default(hostile_crawl, shape):
    """In the query (a day back and forth), in the path (next month and next year), a chain of
    next months: each ends as trap after about max_template_chain (50) requests."""
    web, _, rows, _ = hostile_crawl
    calendar = [r for u, r in rows.items() if shape in u]
    fetched = [r for r in calendar if r["status"] == 200]
    assert 50 <= len(fetched) <= 55, len(fetched)
    assert all(r["error"] == "trap" for r in calendar if r["status"] is None)
    assert sum(r["error"] == "trap" for r in calendar) >= 1
    hits = [p for _, p in web.requests[MAIN] if p.startswith(shape.rstrip("?"))]
    assert len(hits) == len(fetched)  # once each


def test_repeated_path_segments_are_a_trap(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    assert row(rows, MAIN, web, "/deep/a/b/a/b/a/b/a/b")["error"] == "trap"
    assert web.hits(MAIN, "/deep/a/b/a/b/a/b/a/b") == []


def test_hostile_shapes_never_hurt_the_normal_pages(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    # robots.txt redirecting to port 99999: the 3xx stands (allow all), the host is crawled.
    for path in ("/", "/x", "/y"):
        assert row(rows, BADPORT, web, path)["status"] == 200
        assert len(web.hits(BADPORT, path)) == 1  # exactly once
    # an unusable <base href> is ignored: its page's links still come through
    assert row(rows, MAIN, web, "/after-base")["status"] == 200
    for path in ("/", "/badbytes", "/after-bad", "/binary", "/badbase", "/after-base"):
        assert len(web.hits(MAIN, path)) == 1, path
    assert len(web.hits(PLAIN, "/x")) == 1
    with web.lock:
        assert max(web.most_in_flight.values()) == 1, dict(web.most_in_flight)


def test_a_chain_of_hosts_ends_at_max_host_hops(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    for address in FARM[:2]:  # within max_host_hops (2)
        assert row(rows, address, web, "/")["status"] == 200
        assert len(web.hits(address, "/")) == 1
    third = row(rows, FARM[2], web, "/")  # 3 host changes from the seed's host
    assert third["error"] == "trap" and third["status"] is None
    assert web.hits(FARM[2]) == [] and web.hits(FARM[3]) == []
    assert web.origin(FARM[3]) + "/" not in rows
    # a link back to the seed's host counts 0 hops again: its pages are crawled
    for path in ("/back", "/after-back"):
        assert row(rows, MAIN, web, path)["status"] == 200


def test_500_then_success_and_429_retry_after(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    flaky = row(rows, MAIN, web, "/flaky")
    assert (flaky["status"], flaky["error"], flaky["attempts"]) == (200, None, 2)
    busy = row(rows, MAIN, web, "/busy")
    assert (busy["status"], busy["attempts"]) == (200, 2)
    first, second = web.hits(MAIN, "/busy")
    assert second - first >= 1.0  # Retry-After: 1 was obeyed


def test_bad_bytes_and_binary(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    assert row(rows, MAIN, web, "/badbytes")["status"] == 200
    assert row(rows, MAIN, web, "/after-bad")["status"] == 200  # the link still came through
    assert row(rows, MAIN, web, "/binary")["content_type"] == "image/png"
    assert web.origin(MAIN) + "/never" not in rows


def test_redirect_outside_allowed_network_is_refused(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    assert row(rows, FORBIDDEN, web, "/secret")["error"] == "blocked-address"
    assert web.hits(FORBIDDEN) == []  # never connected


def test_robots_rules_crawl_delay_and_failures(hostile_crawl):
    web, _, rows, _ = hostile_crawl
    for path in ("/private/1", "/private/2"):
        assert row(rows, RULES, web, path)["error"] == "robots"
        assert web.hits(RULES, path) == []
    for path in ("/", "/public/1", "/public/2", "/public/3"):
        assert row(rows, RULES, web, path)["status"] == 200
    starts = sorted(web.hits(RULES))
    assert len(web.hits(RULES, "/robots.txt")) == 1  # cached
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.29  # Crawl-delay: 0.3
    assert row(rows, BROKEN, web, "/")["error"] == "robots-unavailable"
    assert web.hits(BROKEN, "/") == []  # 5xx robots.txt: nothing else fetched
    assert row(rows, PLAIN, web, "/x")["status"] == 200  # 404 robots.txt: allow all


def test_unreachable_host_is_backed_off_then_parked(hostile_crawl):
    _, stats, rows, _ = hostile_crawl
    dead = [rows[u] for u in DEAD_URLS]
    assert all(r["status"] is None for r in dead)
    # Its robots.txt is unreachable (RFC 9309: disallow all): tried again with a short
    # back-off for robots_give_up_s, then the host is parked and every queued URL ends
    # instead of waiting forever.
    assert {r["error"] for r in dead} == {"robots-unavailable"}
    assert {r["attempts"] for r in dead} == {0}  # never requested
    assert sum(w["parked_hosts"] for w in stats["db_workers"]) >= 1 + len(UNREACHABLE_ROBOTS)


@pytest.mark.parametrize("shape", sorted(ROBOTS_SHAPES))
def test_every_robots_txt_failure_ends_its_hosts_urls(hostile_crawl, shape):
    """A robots.txt that cannot be read (refused, timeout, reset: "unreachable") is tried a
    few times within robots_give_up_s, then the host's URLs end as robots-unavailable; one
    whose redirect cannot be followed (a blocked address, a loop past 5 hops) is
    "unavailable": allow all."""
    web, _, rows, _ = hostile_crawl
    address = ROBOTS_SHAPES[shape]
    # A try is a burst of hits: aiohttp sends a GET again at once on a connection reset
    # before the answer (the "reset" shape: two hits a try, 1-15 ms apart).
    hits = web.hits(address, "/robots.txt")
    tries = 1 + sum(b - a > 0.1 for a, b in zip(hits, hits[1:]))
    if shape in UNREACHABLE_ROBOTS:
        assert row(rows, address, web, "/")["error"] == "robots-unavailable"
        assert web.hits(address, "/") == []
        # 0.2 s doubling until 3 s after the first failure: about 4 tries (each up to 1 s)
        assert 2 <= tries <= 6, tries
    else:
        for path in ("/", "/x", "/y"):
            assert row(rows, address, web, path)["status"] == 200
            assert len(web.hits(address, path)) == 1
        assert len(hits) == (3 if shape == "redirect-loop" else 1)  # cached after its redirects


def test_a_slow_page_holds_none_of_its_siblings_links(hostile_crawl):
    """The drip runs 15 s; the pages fetched before it hand their links over meanwhile."""
    web, _, rows, _ = hostile_crawl
    drip = row(rows, DRIP, web, "/drip")
    assert drip["error"] == "timeout" and len(web.hits(DRIP, "/drip")) == 1
    (drip_start,) = web.hits(DRIP, "/drip")
    for page in ("a", "b", "c"):
        assert row(rows, DRIP, web, f"/{page}")["status"] == 200
        (page_at,) = web.hits(DRIP, f"/{page}")
        (link_at,) = web.hits(LINKED, f"/from-{page}")
        if page_at < drip_start:  # fetched while the drip still ran
            assert link_at - page_at < 10.0, (page, link_at - page_at)
            assert link_at < drip_start + 14.0
    assert min(web.hits(DRIP, "/a") + web.hits(DRIP, "/b")) < drip_start


def test_politeness_per_host_is_exact_with_robots(ray_session, tmp_path):
    rules = "User-agent: *\nDisallow: /p/3\nDisallow: /r/\n"
    web = SyntheticWeb(hosts=4, pages_per_host=10, seed=21, latency_s=0.05,
                       robots={h: rules for h in range(4)}).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), delay_s=0.2,
                      allow_network=("127.0.0.0/8",), poll_interval_s=0.05, partitions=8,
                      db_workers=2, strategy_workers=2, retries=0, host_batch_cap=3,
                      batch_size=6).start()
        stats = crawl.wait(timeout=240, interval_s=0.3)
        assert stats["phase"] == "finished"
        rows = {r["url"]: r for r in crawl.pages().to_pylist()}
        expected = web.reachable(disallowed=("/p/3", "/r/"))
        assert set(rows) == set(expected)
        for url, r in rows.items():
            path = urlsplit(url).path  # 10 pages per host: "/p/3" matches only itself
            banned = path == "/p/3" or path.startswith("/r/")
            assert (r["error"] == "robots") == banned, url
            assert (url.removeprefix("http://") in web.hits) != banned, url
        for host in range(web.hosts):
            assert web.max_active[host] == 1, f"host {host} saw concurrent requests"
            assert web.min_gap_s(host) >= 0.2 - 0.005, f"host {host}: {web.min_gap_s(host)}"
    finally:
        web.stop()
