"""Requests real sites need: per-request headers, POSTed forms, cookies per host, a proxy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

import raycrawl
from raycrawl import Crawl
from tests.requests_site import PROXY, SHOP, RequestsSite

# (one fetch worker: a second proves nothing here and costs a process's start)
FAST = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 8, "retry_backoff_s": 0.05, "robots": False, "fetch_workers": 1}


class ShopSpider(raycrawl.Spider):
    def parse(self, response):
        yield response.follow("/echo", callback=self.parse_json, headers={"X-Token": "t1"})
        yield response.follow("/form", callback=self.parse_json, formdata={"q": "raycrawl"})
        yield response.follow("/form", callback=self.parse_json)  # a GET: another request
        yield response.follow("/form", callback=self.parse_json, formdata={"q": "raycrawl"})
        yield response.follow("/login", callback=self.parse_login)

    def parse_json(self, response):
        yield {"path": response.url.rsplit("/", 1)[1], **json.loads(response.text)}

    def parse_login(self, response):
        yield from (response.follow(h, callback=self.parse_account)
                    for h in response.css("a::attr(href)").getall())

    def parse_account(self, response):
        yield {"account": response.css("title::text").get()}


@pytest.fixture
def site():
    s = RequestsSite().start()
    yield s
    s.stop()


@pytest.mark.ray
@pytest.mark.parametrize("cookies", [True, False])
def test_headers_posts_and_cookies_travel_through_the_frontier(ray_session, site, tmp_path,
                                                              cookies):
    crawl = Crawl(seeds=[site.origin() + "/"], out=str(tmp_path / "out"), spider=ShopSpider,
                  cookies=cookies, **FAST)
    stats = crawl.start().wait(timeout=120, interval_s=0.2)
    assert stats["phase"] == "finished", stats["reason"]
    items = crawl.items().to_pylist()
    assert {"path": "echo", "token": "t1"} in [
        {k: v for k, v in i.items() if k in ("path", "token") and v is not None} for i in items]
    forms = sorted((i["method"], i["q"]) for i in items if i.get("path") == "form")
    assert forms == [("GET", None), ("POST", "raycrawl")]  # the second POST was a duplicate
    posts = site.requests(SHOP, "/form")
    assert sorted(r["method"] for r in posts) == ["GET", "POST"]
    assert next(r for r in posts if r["method"] == "POST")["body"] == b"q=raycrawl"
    assert site.requests(SHOP, "/echo")[0]["headers"].get("X-Token") == "t1"
    account = site.requests(SHOP, "/account")
    assert len(account) == 1
    rows = {r["url"]: r for r in crawl.pages().to_pylist()}
    if cookies:
        assert account[0]["cookies"] == {"session": "s3cret"}
        assert rows[site.origin() + "/account"]["status"] == 200
        assert {"account": "your account"} in [{"account": i.get("account")} for i in items]
    else:
        assert account[0]["cookies"] == {} and rows[site.origin() + "/account"]["status"] == 403


@pytest.mark.ray
def test_every_request_goes_through_the_proxy(ray_session, site, tmp_path):
    seed = site.origin() + "/"
    done = subprocess.run(
        [sys.executable, "-m", "raycrawl", "crawl", seed, "--out", str(tmp_path / "out"),
         "--proxy", site.origin(PROXY), "--allow-network", "127.0.0.0/8", "--delay", "0",
         "--no-robots", "--quiet", "--address", ray_session],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr
    assert site.requests(SHOP) == []  # nothing went to the site directly
    assert [r["target"] for r in site.requests(PROXY)] == [seed]


def test_a_bad_proxy_is_a_config_error():
    with pytest.raises(raycrawl.ConfigError, match="proxy"):
        raycrawl.CrawlConfig(proxy="socks5://127.0.0.1:1080")


def test_a_hosts_cookies_round_trip_through_the_store_format():
    asyncio.run(_round_trip())  # aiohttp's cookie jar lives in an event loop


async def _round_trip():
    from http.cookies import SimpleCookie

    from yarl import URL

    from raycrawl.fetch.cookies import MAX_COOKIES, dump_cookies, load_cookies
    from raycrawl.fetch.page import request_headers
    from raycrawl.formats.schemas import FetchRequest

    def _cookie_header(jar, url):
        return request_headers(FetchRequest(url, 0, "127.0.0.9", 0, 0), jar).get("Cookie", "")

    jar = load_cookies("127.0.0.9", None)
    for i in range(MAX_COOKIES + 20):
        cookie: SimpleCookie = SimpleCookie()
        cookie[f"c{i}"] = str(i)
        cookie[f"c{i}"]["path"] = "/" if i % 2 else "/private"
        jar.update_cookies(cookie, URL("http://127.0.0.9/"))
    again = load_cookies("127.0.0.9", dump_cookies(jar))
    assert len(list(again)) == MAX_COOKIES
    header = _cookie_header(again, "http://127.0.0.9/page")
    assert "c119=119" in header and "c118=" not in header  # /private is not sent to /page
    assert "c118=118" in _cookie_header(again, "http://127.0.0.9/private/x")
