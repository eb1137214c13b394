"""Crawls that render pages, on the session's Ray: a site whose links only its scripts write
is crawled whole with rendering and not past its first page without; a spider's follows ask
for renders; browsers killed mid-crawl (Chromium, and the browser actor) cost re-renders,
never error rows."""

from __future__ import annotations

import time

import pyarrow.compute as pc
import pytest
import ray

from actors.options import NAMESPACE
from raycrawl import Crawl
from tests.jsweb import JSWeb
from tests.test_render import kill_browsers, needs_browser

pytestmark = [pytest.mark.ray, needs_browser]

# One page at a time per browser: the suite's other tests share the two cores
FAST = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 8, "retry_backoff_s": 0.05, "render_concurrency": 1}

SPIDER = '''
import raycrawl


class Titles(raycrawl.Spider):
    """Front pages render by --render-include; their pages by the follows' render=True."""

    def parse(self, response):
        for href in response.css("a::attr(href)").getall():
            if href.endswith("/"):  # another host's front: the crawl's rule renders it
                yield response.follow(href, callback=self.parse)
            else:
                yield response.follow(href, callback=self.parse_page, render=True)

    def parse_page(self, response):
        yield {"title": response.css("#title::text").get()}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse_page, render=True)
'''


def fetched_urls(crawl: Crawl) -> list[str]:
    pages = crawl.pages()
    errors = pages.filter(pc.is_valid(pages.column("error")))
    assert errors.num_rows == 0, errors.select(["url", "error", "error_detail"]).to_pylist()
    return pages.column("url").to_pylist()


def test_a_scripted_site_is_crawled_whole_rendered_and_not_past_its_front_without(
        ray_session, tmp_path):
    web = JSWeb(("127.0.0.1", "127.0.0.2"), pages=5).start()
    try:
        spider = tmp_path / "titles.py"
        spider.write_text(SPIDER)
        plain = Crawl(seeds=[web.seed_url], out=str(tmp_path / "plain"), **FAST).start()
        assert plain.wait(timeout=120, interval_s=0.1)["phase"] == "finished"
        assert fetched_urls(plain) == [web.seed_url]

        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), db_workers=2,
                      spider=f"{spider}:Titles", render_include=(r"/$",), **FAST).start()
        stats = crawl.wait(timeout=180, interval_s=0.1)
        assert stats["phase"] == "finished"
        urls = fetched_urls(crawl)
        assert sorted(urls) == sorted(web.reachable())  # each once
        pages = crawl.pages()
        assert all(pages.column("rendered").to_pylist())
        titles = sorted(row["title"] for row in crawl.items().to_pylist())
        assert titles == sorted([f"page {i}" for i in range(5)] * 2)
    finally:
        web.stop()


def browser_workers(crawl_id: str) -> list[ray.actor.ActorHandle]:
    return [ray.get_actor(a["name"], namespace=NAMESPACE)
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith(crawl_id + "/")
            and a["name"].endswith("/browser")]


def wait_fetched(crawl: Crawl, n: int) -> None:
    deadline = time.monotonic() + 90
    while crawl.stats()["fetched"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} pages fetched"
        time.sleep(0.05)


def test_browsers_killed_mid_crawl_cost_rerenders_not_error_rows(ray_session, tmp_path):
    web = JSWeb(("127.0.0.1", "127.0.0.2", "127.0.0.3"), pages=18, delay_s=0.05).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), render=True,
                      db_workers=2, fetch_workers=2, **FAST).start()
        wait_fetched(crawl, 10)
        killed = 0
        for browser in browser_workers(crawl.crawl_id):  # Chromium itself
            killed += kill_browsers(ray.get(browser.stats.remote())["pid"])
        assert killed >= 1
        wait_fetched(crawl, 30)
        for browser in browser_workers(crawl.crawl_id):  # the browser actor's process
            ray.kill(browser, no_restart=False)
        stats = crawl.wait(timeout=240, interval_s=0.1)
        assert stats["phase"] == "finished"
        assert sorted(fetched_urls(crawl)) == sorted(web.reachable())  # each once, no error
        assert all(crawl.pages().column("rendered").to_pylist())
    finally:
        web.stop()
