"""The fetch worker's body against a synthetic web on loopback (no Ray)."""

import asyncio
import socket

import pytest

from raycrawl.config import CrawlConfig
from raycrawl.fetch.extract import extract_links
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.options import FetchOptions
from raycrawl.formats import schemas
from raycrawl.formats.entry import Entry
from raycrawl.testing.synthweb import Link, SyntheticWeb
from raycrawl.urls import url_info
from tests.inprocess import fetch_feed

P = 8


def options(**settings):
    return FetchOptions.from_config(CrawlConfig(partitions=P, delay_s=0.0,
                                                allow_network=("127.0.0.0/8",), **settings))


def feed(urls, depth=0):
    return schemas.feed_batch((url_info(u, P) for u in urls), depth)


def run(urls, opts, depth=0):
    pages, links, robots, *_ = asyncio.run(fetch_feed(feed(urls, depth), opts))
    assert pages.schema == schemas.SPIDER_LOG_PAGES and links.schema == schemas.SPIDER_LOG_LINKS
    assert robots.num_rows == 0  # nobody asked for robots.txt
    return pages.to_pylist(), links.to_pylist()


def test_page_links_are_canonical_routed_and_deduplicated(web):
    pages, links = run([web.seed_url], options(), depth=2)
    (page,) = pages
    assert (page["status"], page["error"], page["depth"]) == (200, None, 2)
    assert page["content_type"].startswith("text/html") and page["size_bytes"] > 0
    expected = {web.url(link) for link in web.links(0, 0)}
    assert {row["url"] for row in links} == expected
    assert page["links_count"] == len(links) == len(expected)  # variants folded, no mailto/js
    for row in links:
        info = url_info(row["url"], P)
        assert (row["fingerprint"], row["host"], row["partition"]) == (
            info.fingerprint, info.host, info.partition)
        assert row["depth"] == 3 and row["parent_url"] == web.seed_url
        assert row["hops"] == (0 if row["host"] == page["host"] else 1)  # a host change: +1
    assert {row["hops"] for row in links} == {0, 1}


def test_links_carry_their_pages_host_hops(web):
    info = url_info(web.seed_url, P)
    entry = Entry(info.url, info.fingerprint, info.host, info.partition, 0, 1.0, hops=4)
    pages, links, *_ = asyncio.run(fetch_feed(schemas.feed_rows([entry], [0.0], [False]),
                                              options()))
    assert pages.num_rows == 1 and links.num_rows > 0
    for row in links.to_pylist():
        assert row["hops"] == (4 if row["host"] == info.host else 5)


def test_redirect_is_a_link_at_the_same_depth(web):
    pages, links = run([web.url(Link("r", 1, 3))], options(), depth=1)
    assert pages[0]["status"] == 302
    assert pages[0]["location"] == web.url(Link("p", 1, 3))
    assert [(r["url"], r["depth"]) for r in links] == [(web.url(Link("p", 1, 3)), 1)]


def test_binary_is_recorded_not_parsed_and_errors_have_status(web):
    urls = [web.url(Link("bin", 0, 1)), web.url(Link("e", 0, 1)), web.url(Link("missing", 0, 1))]
    pages, links = run(urls, options())
    by_url = {p["url"]: p for p in pages}
    assert by_url[urls[0]]["content_type"] == "application/octet-stream"
    assert [by_url[u]["status"] for u in urls] == [200, 500, 404]
    assert links == []


def test_body_cap(web):
    pages, links = run([web.seed_url], options(max_body_bytes=100))
    assert pages[0]["error"] == "too-large" and pages[0]["status"] == 200 and links == []


def test_connection_refused_is_a_value():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pages, _ = run([f"http://127.0.0.1:{port}/"], options())
    assert pages[0]["status"] is None and pages[0]["error"] == "connection"


def test_address_guard_refuses_loopback_unless_allowed(web):
    opts = FetchOptions.from_config(CrawlConfig(partitions=P, delay_s=0.0))
    pages, _ = run([web.seed_url], opts)
    assert pages[0]["error"] == "blocked-address" and pages[0]["status"] is None
    assert sum(web.hits.values()) == 0  # never connected
    narrow = FetchOptions.from_config(CrawlConfig(partitions=P, delay_s=0.0,
                                                  allow_network=("127.0.0.99/32",)))
    assert run([web.seed_url], narrow)[0][0]["error"] == "blocked-address"


def test_localhost_name_is_checked_on_resolution(web):
    port = web.ports[0]
    opts = FetchOptions.from_config(CrawlConfig(partitions=P, delay_s=0.0))
    pages, _ = run([f"http://localhost:{port}/p/1"], opts)
    assert pages[0]["error"] == "blocked-address"


def test_every_request_yields_one_row(web):
    urls = [web.url(Link("p", h, i)) for h in range(4) for i in range(1, 6)]
    pages, _ = run(urls, options(fetch_concurrency=3))
    assert sorted(p["url"] for p in pages) == sorted(urls)
    assert all(p["status"] == 200 for p in pages)


def test_batches_sharing_a_limit_share_its_requests_in_flight():
    """A fetch worker runs batches at once under one ``fetch_concurrency``."""
    slow = SyntheticWeb(hosts=4, pages_per_host=12, seed=11, latency_s=0.05).start()
    try:
        opts = options(fetch_concurrency=3, per_host=4)
        halves = [[slow.url(Link("p", h, i)) for h in range(4) for i in range(k, k + 4)]
                  for k in (1, 5)]

        async def both(limit):
            return await asyncio.gather(*(fetch_feed(feed(urls), opts, limit=limit)
                                          for urls in halves))

        asyncio.run(both(None))
        assert slow.max_active_all > 3  # each batch alone keeps 3 in flight
        slow.max_active_all = 0

        async def shared():
            return await both(RequestLimit(opts.concurrency))

        results = asyncio.run(shared())
        assert slow.max_active_all == 3
        for (pages, *_), urls in zip(results, halves):
            assert sorted(pages.column("url").to_pylist()) == sorted(urls)
    finally:
        slow.stop()


@pytest.mark.parametrize("body, ctype, expected", [
    (b'<base href="http://b.com/d/"><a href="x">', "text/html", ["http://b.com/d/x"]),
    ('<meta charset="latin-1"><a href="/é">'.encode("latin-1"), "text/html",
     ["http://a.com/é"]),
    (b'\xff\xfe<\x00a\x00 \x00h\x00r\x00e\x00f\x00=\x00"\x00/\x00u\x00"\x00>\x00', "text/html",
     ["http://a.com/u"]),
    (b'<a href="/ok">\xff\xfe\xfa invalid utf-8 <a href="/ok2">', "text/html; charset=utf-8",
     ["http://a.com/ok", "http://a.com/ok2"]),
    (b'<a href="#top"></a><a href=" /t ">', "text/html", ["http://a.com/t"]),
    (b"", "text/html", []),
    (b'<a href="/a">1</a><map><area href="b"></map><a>none</a><a href="/c">3</a>',
     "text/html", ["http://a.com/a", "http://a.com/b", "http://a.com/c"]),
    (b'<base href="http://[::1"><a href="x">', "text/html", ["http://a.com/x"]),  # bad base
    # navigational <link rel> kinds (case and extra words aside), not a page's parts
    (b'<head><link rel="stylesheet" href="/s.css"><link rel="search" href="search.html">'
     b'<link rel="NEXT prefetch" href="/p2"><link rel="icon" href="/f.ico">'
     b'<link rel="canonical" href="/c"><link rel="alternate" hreflang="de" href="/de">'
     b'<link href="/no-rel"></head><a href="/a">a</a>', "text/html",
     ["http://a.com/a", "http://a.com/search.html", "http://a.com/p2", "http://a.com/c",
      "http://a.com/de"]),
    (b'<frameset><frame src="left.html"><frame src="/right"></frameset>', "text/html",
     ["http://a.com/left.html", "http://a.com/right"]),
    (b'<p>x<iframe src="/embedded"></iframe><a href="/after">', "text/html",
     ["http://a.com/after", "http://a.com/embedded"]),
])
@pytest.mark.parametrize("parser", ["lexbor", "parsel"])
def test_extraction(body, ctype, expected, parser):
    assert extract_links("http://a.com/page", body, ctype, parser) == expected


def test_parsers_agree_on_a_benchmark_page():
    from benchmarks.web import Web, WebSpec

    web = Web(WebSpec(hosts=3, pages=60), port=8000)
    for h, i in [(0, 0), (1, 25), (2, 30)]:
        body = web.render(h, i)
        url = web.url(h, i)
        lexbor = extract_links(url, body, "text/html; charset=utf-8", "lexbor")
        assert lexbor == extract_links(url, body, "text/html; charset=utf-8", "parsel")
        assert len(lexbor) >= 100


def test_odd_ip_spellings_are_resolved_then_guarded(web):
    opts = FetchOptions.from_config(CrawlConfig(partitions=P, delay_s=0.0))
    port = web.ports[0]
    hex_form, int_form = f"http://0x7f.0.0.2:{port}/p/1", f"http://2130706434:{port}/p/2"
    pages, _ = run([hex_form, int_form], opts)
    errors = {p["url"]: p["error"] for p in pages}
    assert errors[hex_form] == "blocked-address"  # resolved to 127.0.0.2, then refused
    assert errors[int_form] in ("blocked-address", "invalid-url")  # never reaches a socket
    assert sum(web.hits.values()) == 0


def test_a_retry_after_stops_the_hosts_other_urls():
    from aiohttp import web as aioweb

    hits: list[str] = []

    async def scenario():
        async def handler(request):
            hits.append(request.path)
            if request.path == "/busy":
                return aioweb.Response(status=429, headers={"Retry-After": "30"})
            await asyncio.sleep(0.01)
            return aioweb.Response(text="<html></html>", content_type="text/html")

        app = aioweb.Application()
        app.router.add_get("/{p}", handler)
        runner = aioweb.AppRunner(app, access_log=None)
        await runner.setup()
        site = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            urls = [f"http://127.0.0.1:{port}/{p}" for p in ("a", "busy", "b", "c")]
            pages, *_ = await fetch_feed(feed(urls), options())
            return pages.to_pylist()
        finally:
            await runner.cleanup()

    rows = asyncio.run(scenario())
    assert [(r["url"].rsplit("/", 1)[1], r["status"], r["retry_after_s"]) for r in rows] == [
        ("a", 200, None), ("busy", 429, 30.0)]
    assert hits == ["/a", "/busy"]  # /b and /c were not requested: they go back to the queue


def test_a_host_that_raises_cancels_its_siblings_before_the_error_leaves(web, monkeypatch):
    """Nothing of a failed batch keeps running, so its re-run never doubles a host."""
    import time

    from raycrawl.fetch.page import PageFetcher

    real = PageFetcher.fetch
    running: list[str] = []

    async def fetch(self, req, out, jar=None):
        if req.host == "127.0.0.3":
            raise RuntimeError("a bug on a hostile page")
        running.append(req.url)
        try:
            await asyncio.sleep(5)
            return await real(self, req, out, jar)
        finally:
            running.remove(req.url)

    monkeypatch.setattr(PageFetcher, "fetch", fetch)
    urls = [web.url(Link("p", 0, 1)), web.url(Link("p", 1, 1))]

    async def still_running_when_it_raised():
        try:
            await fetch_feed(feed(urls), options())
        except Exception:  # the batch's error, whatever it is
            return list(running)
        raise AssertionError("the batch did not fail")

    started = time.monotonic()
    assert asyncio.run(still_running_when_it_raised()) == []  # the sibling was cancelled
    assert time.monotonic() - started < 2.0


def test_each_host_comes_out_when_its_own_fetch_ends(web, monkeypatch):
    """A slow host does not hold the batch's other hosts: their rows come out first."""
    import time

    from raycrawl.fetch.batch import fetch_hosts
    from raycrawl.fetch.page import PageFetcher

    real = PageFetcher.fetch

    async def fetch(self, req, out, jar=None):
        if req.host == web.address(1):
            await asyncio.sleep(3.0)
        return await real(self, req, out, jar)

    monkeypatch.setattr(PageFetcher, "fetch", fetch)
    urls = [web.url(Link("p", 1, 1)), web.url(Link("p", 0, 1)), web.url(Link("p", 0, 2)),
            web.url(Link("p", 2, 1))]

    async def parts():
        started, out = time.monotonic(), []
        async for hosts, part in fetch_hosts(feed(urls), options()):
            out.append((sorted(hosts), sorted(part.pages.column("host").to_pylist()),
                        part.links.num_rows > 0, time.monotonic() - started))
        return out

    got = asyncio.run(parts())
    fast = sorted([web.address(0), web.address(0), web.address(2)])
    # Parts naming no host may come between (the rows of hosts still running, see EARLY_S).
    assert [hosts for hosts, *_ in got if hosts] in (
        [[web.address(0), web.address(2)], [web.address(1)]],
        [[web.address(0)], [web.address(2)], [web.address(1)]],
        [[web.address(2)], [web.address(0)], [web.address(1)]])
    slow = [i for i, (_, pages, *_) in enumerate(got) if web.address(1) in pages]
    assert len(slow) == 1 and got[slow[0]][1] == [web.address(1)]
    assert sorted(h for _, pages, *_ in got[:slow[0]] for h in pages) == fast
    assert all(links for _, pages, links, _ in got if pages)
    # the fast hosts did not wait for the slow one
    assert max(at for _, pages, _, at in got[:slow[0]] if pages) < 2.0 <= got[slow[0]][3]


def test_a_consumer_that_stops_early_leaves_no_request_running(web, monkeypatch):
    from raycrawl.fetch.batch import fetch_hosts
    from raycrawl.fetch.page import PageFetcher

    real = PageFetcher.fetch
    running: list[str] = []

    async def fetch(self, req, out, jar=None):
        running.append(req.url)
        try:
            if req.host == web.address(1):
                await asyncio.sleep(30)
            return await real(self, req, out, jar)
        finally:
            running.remove(req.url)

    monkeypatch.setattr(PageFetcher, "fetch", fetch)
    urls = [web.url(Link("p", 0, 1)), web.url(Link("p", 1, 1))]

    async def first_part_only():
        parts = fetch_hosts(feed(urls), options())
        hosts, _ = await anext(parts)
        await parts.aclose()
        return hosts, list(running)

    assert asyncio.run(asyncio.wait_for(first_part_only(), 10)) == ([web.address(0)], [])


def test_per_ip_limits_requests_to_one_address_whatever_their_hosts(monkeypatch):
    """Four hosts; with ``per_ip`` 1 and every host on one address, one request at a time."""
    slow = SyntheticWeb(hosts=4, pages_per_host=6, seed=12, latency_s=0.05).start()
    try:
        urls = [slow.url(Link("p", h, i)) for h in range(4) for i in range(1, 4)]
        asyncio.run(fetch_feed(feed(urls), options(per_host=2)))
        assert slow.max_active_all > 2  # the hosts side by side
        slow.max_active_all = 0
        slow.max_active.clear()
        pages, *_ = asyncio.run(fetch_feed(feed(urls), options(per_host=2, per_ip=1)))
        assert 1 < slow.max_active_all <= 4 and pages.num_rows == 12  # an address each
        assert max(slow.max_active.values()) == 1

        async def one_address(self, host):
            return "192.0.2.1"

        monkeypatch.setattr(RequestLimit, "address", one_address)
        slow.max_active_all = 0
        pages, *_ = asyncio.run(fetch_feed(feed(urls), options(per_host=2, per_ip=1)))
        assert slow.max_active_all == 1
        assert pages.num_rows == 12 and pages.column("error").null_count == 12
    finally:
        slow.stop()


def test_request_limit_addresses():
    limit = RequestLimit(4, per_ip=1)

    async def addresses():
        return [await limit.address(h) for h in ("127.0.0.9", "[::1]", "localhost")]

    literal, v6, name = asyncio.run(addresses())
    assert (literal, v6) == ("127.0.0.9", "::1")
    assert name in ("127.0.0.1", "::1")  # localhost, from DNS (/etc/hosts)
    assert limit.names["localhost"][0] == name  # cached

    async def held_and_forgotten():
        async with limit.slot("127.0.0.9"):
            assert limit.users == {"127.0.0.9": 1}
        return dict(limit.users), dict(limit.addresses)

    assert asyncio.run(held_and_forgotten()) == ({}, {})
