"""The fetch path's stages, each on its own (no crawl): request headers, redirects, what a
response tells the next visit, which links are kept, and a page's row."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import msgpack
import pytest

from raycrawl.config import CrawlConfig
from raycrawl.errors import ErrorKind
from raycrawl.fetch.collect import Collector, Link, Parent, accepted
from raycrawl.fetch.cookies import load_cookies
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.page import Fetch, PageFetcher, Seen, redirect_target, request_headers, seen_in
from raycrawl.formats.schemas import FetchOutcome, FetchRequest, LinkFound


def options(**settings) -> FetchOptions:
    return FetchOptions.from_config(CrawlConfig(partitions=8, delay_s=0.0, **settings))


def req(url="http://a.com/x", **fields) -> FetchRequest:
    return FetchRequest(url, 1, "a.com", 0, 2, **fields)


def test_request_headers_carry_the_follows_a_revisits_validators_and_the_cookies():
    assert request_headers(req(), None) == {}
    follow = req(headers=msgpack.packb({"X-Token": "t"}))
    assert request_headers(follow, None) == {"X-Token": "t"}
    first = req(etag='"e"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert request_headers(first, None) == {}  # visit 1 asks plainly
    again = req(visit=2, etag='"e"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert request_headers(again, None) == {
        "If-None-Match": '"e"', "If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}

    async def with_cookie():
        from http.cookies import SimpleCookie

        import msgpack as mp
        cookie: SimpleCookie = SimpleCookie()
        cookie["sid"] = "42"
        jar = load_cookies("a.com", mp.packb([cookie["sid"].OutputString()]))
        return request_headers(req(), jar)

    assert asyncio.run(with_cookie()) == {"Cookie": "sid=42"}


@pytest.mark.parametrize("status,method,body,same", [
    (302, None, None, True), (301, "POST", b"q=1", False), (303, "POST", b"q=1", False),
    (307, "POST", b"q=1", True), (308, "PUT", b"x", True)])
def test_a_redirect_is_a_link_that_keeps_the_method_only_on_307_and_308(status, method, body,
                                                                         same):
    r = req(method=method, body=body, callback="parse_item", meta=b"m", redirect_chain=("u",))
    error, links = redirect_target(r, "/y?b=2&a=1", status, options())
    assert error is None and len(links) == 1
    link = links[0]
    assert link.url == "http://a.com/y?a=1&b=2"  # canonical
    assert (link.callback, link.meta) == ("parse_item", b"m")
    assert (link.method, link.body) == ((method, body) if same else (None, None))


def test_redirects_that_cannot_be_followed_are_errors():
    opts = options(max_redirects=2)
    assert redirect_target(req(), "http://a.com/x", 302, opts)[0] is ErrorKind.REDIRECT_LOOP
    looped = req(redirect_chain=("http://a.com/y",))
    assert redirect_target(looped, "/y", 302, opts)[0] is ErrorKind.REDIRECT_LOOP
    long = req(redirect_chain=("http://a.com/1", "http://a.com/2"))
    assert redirect_target(long, "/3", 302, opts)[0] is ErrorKind.TOO_MANY_REDIRECTS
    assert redirect_target(req(), "http://[::1", 302, opts)[0] is ErrorKind.BAD_REDIRECT


def test_a_response_tells_the_next_visit_whether_the_page_changed():
    resp = SimpleNamespace(headers={"ETag": '"v2"', "Last-Modified": "then"})
    body = b"<html>same</html>"
    last = req(visit=2, digest=hashlib.sha1(body).digest())
    assert seen_in(last, resp, body) == Seen(False, '"v2"', "then", hashlib.sha1(body).digest())
    assert seen_in(last, resp, b"other").changed is True
    # no answer: what the last visit saw stands; a first visit is "changed"
    assert Seen.before(req()) == Seen(True, None, None, None)
    assert Seen.before(req(visit=3, etag='"e"')) == Seen(None, '"e"', None, None)


def test_links_kept_are_canonical_in_scope_each_once_and_at_most_the_limit():
    opts = options(allow_domain=("a.com",))
    kept, out = accepted(["http://a.com/1", "http://a.com/1#frag", "http://b.com/2",
                          "not a url", "http://a.com/" + "x" * 5000, "http://a.com/3",
                          Link("http://a.com/4", method="POST", body=b"q")], opts, 10)
    assert [i.url for i, _ in kept] == ["http://a.com/1", "http://a.com/3", "http://a.com/4"]
    assert out == 1  # b.com
    post = kept[-1]
    assert post[1] is not None and post[0].fingerprint != kept[0][0].fingerprint
    assert len(accepted([f"http://a.com/{i}" for i in range(10)], opts, 4)[0]) == 4


def test_link_rows_carry_follows_and_count_host_hops():
    out = Collector()
    parent = Parent("http://a.com/p", 1, "a.com", 2)
    out.link_rows(parent, ["http://a.com/1", "http://b.com/1"], 2, [], options())
    out.link_rows(parent, [Link("http://c.com/1", callback="cb", priority=3.0)], 2, [],
                  options())
    links = {r.url: r for r in LinkFound.from_batch(out.result().links)}
    assert links["http://a.com/1"].hops == 2 and links["http://b.com/1"].hops == 3
    assert links["http://a.com/1"].callback is None
    assert (links["http://c.com/1"].callback, links["http://c.com/1"].priority) == ("cb", 3.0)


def test_a_page_row_counts_an_attempt_only_when_a_request_was_sent():
    pages = PageFetcher(SimpleNamespace(), options())  # no session: emit sends nothing
    out = Collector()
    sent = Fetch(req(attempts=1), status=200, content_type="text/html", body=b"abc")
    pages.emit(sent, out)
    blocked = Fetch(req(attempts=1), error=ErrorKind.BLOCKED_ADDRESS)
    pages.emit(blocked, out)
    timed_out = Fetch(req(attempts=1), error=ErrorKind.TIMEOUT)
    pages.emit(timed_out, out)
    rows = FetchOutcome.from_batch(out.result().pages)
    assert [(r.status, r.error, r.attempts, r.size_bytes) for r in rows] == [
        (200, None, 2, 3), (None, "blocked-address", 1, 0), (None, "timeout", 2, 0)]
    assert all(r.changed is True for r in rows)  # a first visit


def test_a_body_is_read_within_its_cap_whatever_its_framing():
    """``read_body`` on bodies of a declared length (plain, gzip, too large, cut short) and
    chunked ones, from a loopback server that writes the bytes as given."""
    import gzip

    import aiohttp

    from raycrawl.fetch.client import read_body

    def answer(headers: str, body: bytes) -> bytes:
        return f"HTTP/1.1 200 OK\r\nConnection: close\r\n{headers}\r\n".encode() + body

    def chunked(body: bytes) -> bytes:
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:150], body[150:])) + (
            b"0\r\n\r\n")

    packed = gzip.compress(b"z" * 300)
    answers = {
        "/plain": answer("Content-Length: 10\r\n", b"0123456789"),
        "/big": answer("Content-Length: 5000\r\n", b"x" * 5000),
        "/short": answer("Content-Length: 50\r\n", b"only ten b"),
        "/chunked": answer("Transfer-Encoding: chunked\r\n", chunked(b"c" * 300)),
        "/gzip": answer(f"Content-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n", packed),
    }

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readline()).split()[1].decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(answers[path])
        await writer.drain()
        writer.close()

    async def main() -> dict[str, object]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got: dict[str, object] = {}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for path in answers:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    try:
                        got[path] = await read_body(resp, 100)
                    except aiohttp.ClientPayloadError:
                        got[path] = "payload error"
        server.close()
        return got

    assert asyncio.run(main()) == {
        "/plain": (b"0123456789", False), "/big": (b"", True), "/short": "payload error",
        "/chunked": (b"c" * 100, True), "/gzip": (b"z" * 100, True)}
