"""The trap rules against the shapes of real sites and of traps, by default, without Ray: a
breadth-first crawl of each shape run through the strategy runner (the code a strategy worker
runs), batch by batch, every page answering 200 with the links of its shape."""

from __future__ import annotations

import random
from collections import Counter
from urllib.parse import urlsplit

import pytest

from raycrawl.strategy_worker.traps import url_template
from tests.test_strategy import feed, spider_log

PAGES_PER_BATCH = 100


def calendar_1d(path: str) -> list[str]:  # each month links the next only
    if path == "/":
        return ["/cal/2020/1"]
    year, month = map(int, path.split("/")[2:])
    return [f"/cal/{year + month // 12}/{month % 12 + 1}", "/"]


def calendar_2d(path: str) -> list[str]:  # next month and next year
    if path == "/":
        return ["/cal/2020/1"]
    year, month = map(int, path.split("/")[2:])
    return [f"/cal/{year + month // 12}/{month % 12 + 1}", f"/cal/{year + 1}/{month}", "/"]


def calendar_query(path: str) -> list[str]:  # the day before and after, both ways
    if path == "/":
        return ["/calendar?day=0"]
    if not path.startswith("/calendar"):
        return []
    day = int(path.split("=")[1])
    return [f"/calendar?day={day - 1}", f"/calendar?day={day + 1}", "/about"]


def catalogue(next_only: bool):
    """500 listing pages of 10 items each (5,000 /item/{n}); a listing links its neighbours
    (and, unless ``next_only``, the first and last); an item links its listing."""

    def links(path: str) -> list[str]:
        if path == "/":
            return ["/list?page=1"]
        if path.startswith("/item/"):
            return [f"/list?page={int(path[6:]) // 10 + 1}", "/"]
        page = int(path.split("=")[1])
        out = [f"/item/{(page - 1) * 10 + i}" for i in range(10)]
        out += [f"/list?page={p}" for p in (page - 1, page + 1) if 1 <= p <= 500]
        if not next_only:
            out += ["/list?page=1", "/list?page=500"]
        return out

    return links


def one_template(path: str) -> list[str]:
    """2,500 /p/{n}, each linking the next and seven others of its host (the benchmark web)."""
    n = 0 if path == "/" else int(path[3:])
    rng = random.Random(n)
    return [f"/p/{(n + 1) % 2500}"] + [f"/p/{rng.randrange(2500)}" for _ in range(7)]


def pagination(path: str) -> list[str]:
    """500 pages linking their neighbours, the first and the last; nothing else."""
    page = 1 if path == "/" else int(path.rsplit("/", 1)[1])
    return [f"/page/{p}" for p in (page - 1, page + 1, 1, 500) if 1 <= p <= 500]


def crawl(runner_for, links_of, max_pages: int = 20_000) -> tuple[Counter[str], int]:
    """Fetched URLs by template, and the number of traps."""
    r = runner_for()
    queue = [row["url"] for row in r.add_seeds(feed(["http://h.test/"])).to_pylist()]
    fetched: Counter[str] = Counter()
    traps = 0
    depth = {queue[0]: 0}
    while queue and sum(fetched.values()) < max_pages:
        batch, queue = queue[:PAGES_PER_BATCH], queue[PAGES_PER_BATCH:]
        pages, links = [], []
        for url in batch:
            fetched[url_template(url)] += 1
            pages.append((url, depth[url], 200, None))
            parts = urlsplit(url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            links += [(url, depth[url], "http://h.test" + href, depth[url] + 1)
                      for href in dict.fromkeys(links_of(path))]  # once a page, as fetched
        for row in r.process_spider_log(*spider_log(pages, links)).to_pylist():
            if row["skip"] == "trap":
                traps += 1
            elif row["skip"] is None:
                queue.append(row["url"])
                depth[row["url"]] = row["depth"]
    return fetched, traps


@pytest.mark.parametrize("links_of, template", [
    (calendar_1d, "/cal/{n}/{n}"), (calendar_2d, "/cal/{n}/{n}"),
    (calendar_query, "/calendar?day")])
def test_a_calendar_costs_about_50_requests(runner_for, links_of, template):
    fetched, traps = crawl(runner_for, links_of)
    assert 50 <= fetched[template] <= 55, fetched
    assert traps >= 1


@pytest.mark.parametrize("next_only", [False, True])
def test_a_catalogue_is_crawled_whole(runner_for, next_only):
    fetched, traps = crawl(runner_for, catalogue(next_only))
    assert (fetched["/item/{n}"], fetched["/list?page"], traps) == (5000, 500, 0)


def test_a_host_of_one_template_is_crawled_whole(runner_for):
    fetched, traps = crawl(runner_for, one_template)
    assert (fetched["/p/{n}"], traps) == (2500, 0)


def test_a_pagination_that_links_first_and_last_is_crawled_whole(runner_for):
    fetched, traps = crawl(runner_for, pagination)
    assert (fetched["/page/{n}"], traps) == (500, 0)


def test_the_chain_limit_is_a_setting(runner_for):
    def calendar(runner_for_):
        return crawl(lambda **kw: runner_for_(max_template_chain=200, **kw), calendar_1d)

    fetched, _ = calendar(runner_for)
    assert 200 <= fetched["/cal/{n}/{n}"] <= 205
