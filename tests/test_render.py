"""Rendering without Ray: which URLs render, a browser on the fetch path (links and callbacks
of the rendered DOM, scripts the page loads, navigations, timeouts, screenshots), a browser
killed under a page, and ``raycrawl parse --render``."""

from __future__ import annotations

import asyncio
import json
import os
import time

import msgpack
import psutil
import pytest

from raycrawl.config import CrawlConfig, render_settings
from raycrawl.errors import ConfigError
from raycrawl.fetch.batch import fetch_hosts
from raycrawl.fetch.bounds import render_bounds_s
from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.schemas import FetchOutcome, FetchRequest, LinkFound
from raycrawl.render.browser import (
    Browser,
    BrowserCrashed,
    BrowserUnavailable,
    LocalRenderer,
    RenderJob,
    find_browser,
)
from raycrawl.render.spec import NEVER, RenderRule, RenderSpec, RenderSpecError, pack_render
from raycrawl.spider import Spider, SpiderResponse
from raycrawl.urls import url_info
from tests.jsweb import JSWeb


def browser_missing() -> str | None:
    try:
        find_browser()
    except BrowserUnavailable as exc:
        return str(exc)
    return None


# (CI sets RAYCRAWL_REQUIRE_BROWSER: there, no browser fails these tests)
needs_browser = pytest.mark.skipif(
    browser_missing() is not None and not os.environ.get("RAYCRAWL_REQUIRE_BROWSER"),
    reason=f"no browser here: {browser_missing()}")

# -- which URLs render, and how (no browser) ---------------------------------------------------


def test_a_follow_choice_overrides_the_crawl_rule_both_ways():
    rule = RenderRule(include=(r"/app/",), spec=RenderSpec(timeout_s=5))
    assert rule.spec_for("http://a/app/1", None) == RenderSpec(timeout_s=5)
    assert rule.spec_for("http://a/blog/1", None) is None
    assert rule.spec_for("http://a/app/1", NEVER) is None  # render=False
    assert rule.spec_for("http://a/blog/1", pack_render(True)) == RenderSpec(timeout_s=5)
    spec = rule.spec_for("http://a/blog", pack_render({"wait_for": "#x", "screenshot": True}))
    assert spec == RenderSpec(wait_for="#x", timeout_s=5, screenshot=True)
    assert RenderRule(every=True).spec_for("http://a/", None) == RenderSpec()
    assert RenderRule().with_spider({"wait": "networkidle"}).spec_for("http://a/", None) \
        == RenderSpec(wait="networkidle")
    assert pack_render(None) is None


@pytest.mark.parametrize("bad", [{"wait": "soon"}, {"timeout_s": 0}, {"timeout_s": True},
                                 {"wait_for": ""}, {"script": 3}, {"screenshot": "yes"},
                                 {"colour": "red"}, "yes", 1])
def test_a_bad_render_option_is_refused_with_its_reason(bad):
    with pytest.raises(RenderSpecError):
        pack_render(bad)
    response = SpiderResponse("http://a/", 200, {}, b"", {}, 0)
    with pytest.raises(TypeError, match="follow: render"):
        response.follow("/x", render=bad)


def test_the_crawl_settings_and_the_spider_attribute_give_the_rule():
    config = CrawlConfig(render_include=(r"\.html$",), render_wait="domcontentloaded",
                         render_timeout_s=7, screenshot=True)
    assert config.render_rule == RenderRule(False, (r"\.html$",), RenderSpec(
        "domcontentloaded", None, None, 7, True))
    assert render_settings({"wait_for": "#app", "timeout_s": 3}) == {
        "render": True, "render_wait_for": "#app", "render_timeout_s": 3}
    with pytest.raises(ConfigError, match="render_include|pattern"):
        CrawlConfig(render_include=("(",))
    with pytest.raises(ConfigError, match="wait"):
        CrawlConfig(render_wait="later")
    with pytest.raises(ConfigError, match="spider's render"):
        render_settings({"wait": "later"})


def test_a_render_choice_travels_with_a_follow_through_the_frontier_records():
    from raycrawl.fetch.collect import Link
    from raycrawl.formats.entry import Entry

    page = SpiderResponse("http://a/", 200, {}, b"", {}, 0)
    follow = page.follow("/x", render={"wait": "commit"})
    link = Link.follow(follow)
    assert msgpack.unpackb(link.render) == {"wait": "commit"}
    entry = Entry("http://a/x", 1, "a", 0, 1, 1.0, render=link.render)
    assert Entry.unpack(entry.pack()).render == link.render
    assert FetchRequest.of(entry).render == link.render
    assert Entry.unpack(Entry("http://a/y", 2, "a", 0, 1, 1.0).pack()).render is None


def test_the_bound_of_a_feed_counts_only_the_urls_it_renders():
    opts = FetchOptions.from_config(CrawlConfig(render_include=("/js/",), render_timeout_s=5))
    rows = [FetchRequest(i.url, i.fingerprint, i.host, i.partition, 0, render=r)
            for i, r in [(url_info("http://a/js/1", 16), None),
                         (url_info("http://a/plain", 16), None),
                         (url_info("http://a/plain2", 16), pack_render(True)),
                         (url_info("http://a/js/2", 16), NEVER)]]
    bounds = render_bounds_s(FetchRequest.to_batch(rows), opts)
    assert bounds[0] > 5 and bounds[2] > 5 and bounds[1] == 0 and bounds[3] == 0


LOOPBACK = AddressGuard(("127.0.0.0/8",))

# -- a browser on the fetch path ----------------------------------------------------------------


@pytest.fixture(scope="module")
def jsweb():
    site = JSWeb(("127.0.0.1", "127.0.0.2"), pages=4).start()
    yield site
    site.stop()


def options(**settings) -> FetchOptions:
    return FetchOptions.from_config(CrawlConfig(allow_network=("127.0.0.0/8",), **settings))


def fetch(urls, opts, renderer=None, render=None) -> FetchResult:
    rows = []
    for url in urls:
        info = url_info(url, 16)
        rows.append(FetchRequest(info.url, info.fingerprint, info.host, info.partition, 0,
                                 render=render))

    async def run() -> FetchResult:
        return FetchResult.concat([part async for _, part in fetch_hosts(
            FetchRequest.to_batch(rows), opts, renderer=renderer)])

    return asyncio.run(run())


def links_of(result: FetchResult) -> set[str]:
    return {k.url for k in LinkFound.from_batch(result.links)}


@needs_browser
def test_links_written_by_scripts_are_found_only_when_the_page_is_rendered(jsweb):
    front = jsweb.seed_url
    plain = fetch([front], options())
    assert links_of(plain) == set()
    assert not FetchOutcome.from_batch(plain.pages)[0].rendered
    rendered = fetch([front], options(render=True))
    page = FetchOutcome.from_batch(rendered.pages)[0]
    assert page.status == 200 and page.error is None and page.rendered
    assert links_of(rendered) == {f"{front}p/{i}" for i in range(4)} | {
        jsweb.origin("127.0.0.2") + "/"}
    # an external script the page loads (the browser fetches it), by pattern this time
    before = jsweb.hits.get("127.0.0.1/app.js", 0)
    deep = fetch([f"{front}p/0"], options(render_include=(r"/p/\d+$",)))
    assert links_of(deep) == {f"{front}p/1", f"{front}p/2"}
    assert jsweb.hits["127.0.0.1/app.js"] > before
    # a follow's render=False wins over the crawl's --render
    assert links_of(fetch([f"{front}p/0"], options(render=True), render=NEVER)) == set()


@needs_browser
def test_a_script_navigation_is_a_link_and_the_wait_options_hold(jsweb):
    origin = jsweb.origin("127.0.0.1")
    nav = fetch([f"{origin}/nav"], options(render=True))
    assert links_of(nav) == {f"{origin}/p/0"}
    late = fetch([f"{origin}/p/0"], options(render=True, render_wait_for="#never",
                                            render_timeout_s=1.5))
    page = FetchOutcome.from_batch(late.pages)[0]
    assert (page.status, page.error) == (200, "render-timeout") and links_of(late) == set()
    broken = fetch([f"{origin}/p/0"], options(render=True, render_script="undefinedThing()"))
    page = FetchOutcome.from_batch(broken.pages)[0]
    assert page.error == "render-error" and "undefinedThing" in page.error_detail
    shot = fetch([f"{origin}/p/1"], options(render=True, screenshot=True,
                                            render_wait_for="h1:not(:empty)"))
    page = FetchOutcome.from_batch(shot.pages)[0]
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and page.error is None


@needs_browser
def test_a_callback_gets_the_rendered_dom(jsweb):
    class Titles(Spider):
        render = True

        def parse(self, response):
            yield {"title": response.css("#title::text").get()}

    from raycrawl.fetch.callbacks import CallbackRunner

    runner = CallbackRunner(Titles(), 10.0, 100, 100)
    rows = [FetchRequest(i.url, i.fingerprint, i.host, i.partition, 0)
            for i in [url_info(f"{jsweb.origin('127.0.0.1')}/p/2", 16)]]

    async def run() -> FetchResult:
        return FetchResult.concat([part async for _, part in fetch_hosts(
            FetchRequest.to_batch(rows), options(), callbacks=runner)])

    try:
        result = asyncio.run(run())
    finally:
        runner.close()
    items = [msgpack.unpackb(raw) for raw in result.items.column("item").to_pylist()]
    assert items == [{"title": "page 2"}]


@needs_browser
def test_a_browser_killed_under_a_page_renders_it_again_on_a_new_one(jsweb):
    async def run() -> tuple[int, bool, int]:
        renderer = LocalRenderer(guard=LOOPBACK)
        job = RenderJob(f"{jsweb.origin('127.0.0.1')}/p/0", 200,
                        [("Content-Type", "text/html")],
                        b"<html><body><script src=/app.js></script><script>setTimeout(() => "
                        b"{document.body.innerHTML = '<a href=/late>late</a>'}, 1500)"
                        b"</script></body></html>", RenderSpec(wait_for="a", timeout_s=20))
        try:
            await renderer.render(job)  # started
            browser = renderer.browser
            assert browser is not None
            loaded = jsweb.hits.get("127.0.0.1/app.js", 0)
            task = asyncio.ensure_future(renderer.render(job))
            await rendering(jsweb, loaded)
            killed = kill_browsers()
            out = await task
            return killed, b"/late" in out.html, browser.launches
        finally:
            await renderer.close()

    killed, rendered, launches = asyncio.run(run())
    assert killed >= 1 and rendered and launches == 2


@needs_browser
def test_a_browser_that_keeps_dying_is_an_infrastructure_fault_not_a_page_error(jsweb):
    async def run() -> None:
        browser = Browser(guard=LOOPBACK)
        job = RenderJob(f"{jsweb.origin('127.0.0.1')}/p/0", 200,
                        [("Content-Type", "text/html")], b"<script src=/app.js></script>",
                        RenderSpec(wait_for="a", timeout_s=20))
        loaded = jsweb.hits.get("127.0.0.1/app.js", 0)
        try:
            task = asyncio.ensure_future(browser.render(job))
            await rendering(jsweb, loaded)
            kill_browsers()
            with pytest.raises(BrowserCrashed):
                await task
        finally:
            await browser.close()

    asyncio.run(run())


@needs_browser
def test_a_browser_is_replaced_after_its_pages_and_leaves_no_process_behind(jsweb):
    async def run() -> tuple[int, int]:
        browser = Browser(restart_after=3, concurrency=2)
        job = RenderJob("http://127.0.0.1:9/", 200, [("Content-Type", "text/html")],
                        b"<p>x</p>")
        for _ in range(4):
            await asyncio.gather(*(browser.render(job) for _ in range(3)))
        launches = browser.launches
        for _ in range(200):  # a closed browser's process exits (bounded)
            if len(main_browsers()) <= 1:
                break
            await asyncio.sleep(0.05)
        running = len(main_browsers())
        await browser.close()
        return launches, running

    # 12 pages, 3 a browser: 4 browsers, the replaced ones closed once their pages ended
    assert run_and_count(run) == ((4, 1), 0)


async def rendering(jsweb: JSWeb, loaded: int) -> None:
    """Until the page being rendered loaded its script (the browser is in the page)."""
    for _ in range(600):
        if jsweb.hits.get("127.0.0.1/app.js", 0) > loaded:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the page never loaded its script")


def run_and_count(coro) -> tuple[int, int]:
    """``coro``'s result, and the Chromium processes it left running (bounded wait for those
    it closed to exit)."""
    before = set(browser_pids())
    out = asyncio.run(coro())
    for _ in range(200):
        if not set(browser_pids()) - before:
            break
        time.sleep(0.05)
    return out, len(set(browser_pids()) - before)


def live(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE and "chrom" in p.name().lower()
    except psutil.NoSuchProcess:
        return False


def browser_pids() -> list[int]:
    """Chromium processes started by this process (any depth), exited ones left out."""
    return [p.pid for p in psutil.Process().children(recursive=True) if live(p)]


def main_browsers(root: int | None = None) -> list[psutil.Process]:
    """The Chromium main processes (not their renderers) under process ``root`` (default:
    this one)."""
    found = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if live(p) and not any(a.startswith("--type=") for a in p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def kill_browsers(root: int | None = None) -> int:
    """Kill the Chromium main processes under process ``root`` (default: this one); how
    many."""
    found = main_browsers(root)
    for p in found:
        p.kill()
    return len(found)


# -- raycrawl parse --render --------------------------------------------------------------------

SPIDER = '''
import raycrawl


class Titles(raycrawl.Spider):
    def parse(self, response):
        yield {"title": response.css("#title::text").get()}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, render=True)
'''


@needs_browser
def test_parse_with_render_runs_the_callback_on_the_rendered_page(jsweb, tmp_path, capsys):
    from raycrawl.cli import main

    spider = tmp_path / "titles.py"
    spider.write_text(SPIDER)
    url = f"{jsweb.origin('127.0.0.1')}/p/0"
    assert main(["parse", url, "--spider", f"{spider}:Titles", "--allow-network",
                 "127.0.0.0/8", "--render", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rendered"] and out["items"] == [{"title": "page 0"}]
    assert [f["url"] for f in out["follows"]] == [f"{url[:-1]}1", f"{url[:-1]}2"]
    assert all(f["render"] == {} for f in out["follows"])
    assert main(["parse", url, "--spider", f"{spider}:Titles", "--allow-network",
                 "127.0.0.0/8", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert not plain["rendered"] and plain["items"] == [{"title": None}] and not plain["follows"]
