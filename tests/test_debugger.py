"""One callback on one URL (``raycrawl parse``, ``raycrawl.parse``): the crawl's fetch path,
no crawl, no Ray."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

import raycrawl
from raycrawl.cli import main
from raycrawl.errors import ConfigError, InvalidURL, SpiderError
from tests.loopback import LoopbackSites

PAGE = """<html><head><title>Books</title></head><body>
<ul><li><a href="/book/1">One</a></li><li><a href="/book/2?ref=x#top">Two</a></li>
<li><a href="https://elsewhere.example/">Away</a></li><li><a href="/private/3">Hidden</a></li>
</ul></body></html>"""

SPIDER = '''
import raycrawl


class Books(raycrawl.Spider):
    follow_links = True  # the page's own links too, after the follows

    def parse(self, response):
        yield {"title": response.css("title::text").get(), "meta": response.meta}
        for href in response.css("li a::attr(href)").getall()[:2]:
            yield response.follow(href, callback=self.parse_book, meta={"shelf": 1},
                                  priority=2.0)

    def parse_book(self, response):
        yield {"book": response.url, "shelf": response.meta.get("shelf")}

    def parse_broken(self, response):
        yield {"ok": 1}
        return helper(response)

    def parse_junk(self, response):
        yield 42


def helper(response):
    return 1 / 0
'''


class Inline(raycrawl.Spider):
    """A spider given as a class, as a notebook cell defines one."""

    def parse(self, response):
        yield {"bytes": len(response.body), "status": response.status}


class _Site(LoopbackSites):
    addresses = ("127.0.0.1",)

    def _app(self, address: str) -> web.Application:
        async def robots(_: web.Request) -> web.Response:
            return web.Response(text="User-agent: *\nDisallow: /private\n")

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def moved(_: web.Request) -> web.Response:
            raise web.HTTPMovedPermanently("/shelf")

        app = web.Application()
        app.router.add_get("/robots.txt", robots)
        app.router.add_get("/shelf", page)
        app.router.add_get("/private/{n}", page)
        app.router.add_get("/moved", moved)
        return app


@pytest.fixture(scope="module")
def site():
    s = _Site().start()
    yield s.origin("127.0.0.1")
    s.stop()


@pytest.fixture
def spider(tmp_path):
    path = tmp_path / "books.py"
    path.write_text(SPIDER)
    return f"{path}:Books"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["parse", *argv, "--allow-network", "127.0.0.0/8"])
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_prints_the_items_follows_and_links_of_a_callback(site, spider, capsys):
    code, out, err = run(capsys, f"{site}/shelf", "--spider", spider, "--meta", '{"n": 7}')
    assert code == 0, out + err
    assert '{"title": "Books", "meta": {"n": 7}}' in out
    assert "follows (2):" in out
    assert f'{site}/book/1  callback="parse_book"  meta={{"shelf": 1}}  priority=2.0' in out
    # the links a crawl would queue: the follows first, canonical (no fragment), then the
    # page's own, robots.txt's disallowed among them (a crawl checks it when it fetches them)
    links = out.split("links the crawl would queue")[1].splitlines()[1:]
    assert [u.strip() for u in links][:2] == [f"{site}/book/1", f"{site}/book/2?ref=x"]
    assert "https://elsewhere.example/" in out and f"{site}/private/3" in out

    code, out, _ = run(capsys, f"{site}/shelf", "--spider", spider, "--callback", "parse_book",
                       "--meta", '{"shelf": 4}', "--json", "--exclude", "elsewhere")
    parsed = json.loads(out)
    assert code == 0 and parsed["ok"] and parsed["callback"] == "parse_book"
    assert parsed["items"] == [{"book": f"{site}/shelf", "shelf": 4}]
    assert "https://elsewhere.example/" not in parsed["links"]  # the crawl's scope rules


def test_a_callback_that_raises_prints_its_traceback_and_exits_1(site, spider, capsys):
    code, out, err = run(capsys, f"{site}/shelf", "--spider", spider, "--callback",
                         "parse_broken")
    assert code == 1
    assert "not parsed: callback-error: parse_broken: ZeroDivisionError" in out
    assert "items (0):" in out  # a page whose callback failed keeps none (as in a crawl)
    assert "Traceback (most recent call last)" in err and "books.py" in err
    assert "in helper" in err and "1 / 0" in err

    code, out, err = run(capsys, f"{site}/shelf", "--spider", spider, "--callback", "parse_junk")
    assert code == 1 and "yielded a int" in out and err == ""  # no traceback: nothing raised


@pytest.mark.parametrize("path, why", [
    ("/private/1", "not parsed: robots"),
    ("/missing", "not parsed: http-404"),
    ("/moved", "not parsed: http-301"),
])
def test_a_url_the_callback_does_not_get_says_why_and_exits_1(site, spider, capsys, path, why):
    code, out, _ = run(capsys, site + path, "--spider", spider)
    assert code == 1 and why in out, out
    if path == "/moved":
        assert f"(to {site}/shelf)" in out and f"{site}/shelf" in out.split("queue")[1]


def test_robots_off_and_a_blocked_address(site, spider, capsys):
    code, out, _ = run(capsys, f"{site}/private/1", "--spider", spider, "--no-robots")
    assert code == 0 and '"title": "Books"' in out
    assert main(["parse", f"{site}/shelf", "--spider", spider]) == 1  # no --allow-network
    assert "blocked-address" in capsys.readouterr().out
    assert "--allow-network" in raycrawl.parse(f"{site}/shelf", spider).detail


@pytest.mark.parametrize("argv, message", [
    (["not a url"], "not an http(s) url"),
    (["http://127.0.0.1:1/", "--callback", "nope"], "has no callback 'nope'"),
    (["http://127.0.0.1:1/", "--callback", "_private"], "has no callback '_private'"),
    (["http://127.0.0.1:1/", "--meta", "{oops"], "--meta: not json"),
    (["http://127.0.0.1:1/", "--meta", "[1, 2]"], "meta must be a mapping"),
])
def test_bad_input_is_one_line_and_exit_2(spider, capsys, argv, message):
    code = main(["parse", *argv, "--spider", spider])
    err = capsys.readouterr().err
    assert code == 2 and message in err.lower()
    assert len(err.strip().splitlines()) == 1


def test_a_spider_that_does_not_load_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import nothing_of_the_kind\n")
    init = tmp_path / "init.py"
    init.write_text("import raycrawl\nclass S(raycrawl.Spider):\n"
                    "    def __init__(self):\n        raise RuntimeError('no config')\n")
    for spec in (f"{bad}:S", f"{tmp_path}/none.py:S", "no-colon", f"{init}:S"):
        assert main(["parse", "http://127.0.0.1:1/", "--spider", spec]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_python_api_works_in_a_notebook_event_loop(site, spider):
    with pytest.raises(InvalidURL):
        raycrawl.parse("::", spider)
    with pytest.raises(SpiderError):
        raycrawl.parse(f"{site}/shelf", spider, callback="nope")
    with pytest.raises(ConfigError):
        raycrawl.parse(f"{site}/shelf", spider, meta={"f": object()})

    async def in_a_running_loop() -> raycrawl.Parsed:  # as a Jupyter cell runs
        return raycrawl.parse(f"{site}/shelf", spider, "parse_book", {"shelf": "top"},
                              allow_network=["127.0.0.0/8"])

    result = asyncio.run(in_a_running_loop())
    assert result.ok and result.items == [{"book": f"{site}/shelf", "shelf": "top"}]
    assert "<pre>" in result._repr_html_() and "parse_book" in result._repr_html_()
    by_class = raycrawl.parse(f"{site}/shelf", Inline, allow_network=["127.0.0.0/8"])
    assert by_class.ok and by_class.items == [{"bytes": len(PAGE), "status": 200}]
