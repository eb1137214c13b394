"""Spider crawls on the session's Ray: the example spider shipped from a file, items exactly
once, callback errors, scope, faults."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest
import ray

from raycrawl import Crawl
from raycrawl.testing.synthweb import Link, SyntheticWeb
from tests.test_faults import actor_named, run_until
from tests.test_warc import check_every_row_has_its_records

pytestmark = pytest.mark.ray

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "synthweb_spider.py")
FAST = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 16, "retry_backoff_s": 0.05, "db_workers": 2, "strategy_workers": 2}
RAISES = 9  # the raising variant fails on pages whose index % RAISES == 5


def shipped_spider(tmp_path, raising: bool = False) -> str:
    """The example spider copied to a folder no worker has on its path, under a fresh module
    name: only Ray's runtime_env can bring it to the workers."""
    folder = tmp_path / "spiders"
    folder.mkdir(exist_ok=True)
    path = folder / f"spider_{uuid.uuid4().hex[:8]}.py"
    shutil.copy(EXAMPLE, path)
    if raising:
        with open(path, "a") as fh:
            fh.write(f'''

class RaisingSpider(SynthSpider):
    def parse_page(self, response):
        if int(response.url.split("/p/")[-1].split("?")[0]) % {RAISES} == 5:
            raise KeyError("price")
        yield from super().parse_page(response)
''')
    return f"{path}:{'RaisingSpider' if raising else 'SynthSpider'}"


def spider_model(web: SyntheticWeb, raising: bool = False) -> tuple[set[str], set[str], set[str]]:
    """(URLs the example spider fetches, pages that give an item, pages whose callback
    raises): every link of the seed, then each page's first link; redirects followed."""
    seed = Link("p", 0, 0)
    fetched, items, failed = set(), set(), set()
    todo = [(seed, True)]
    while todo:
        link, is_seed = todo.pop()
        url = web.url(link)
        if url in fetched:
            continue
        fetched.add(url)
        if link.kind == "r":
            todo.append((Link("p", link.host, link.index), False))
        elif link.kind == "bin":
            items.add(url)  # a callback runs on any 2xx; it finds no link in the bytes
        elif link.kind == "p":
            if raising and not is_seed and link.index % RAISES == 5:
                failed.add(url)
                continue
            items.add(url)
            nxt = web.links(link.host, link.index)
            todo += [(t, False) for t in (nxt if is_seed else nxt[:1])]
    return fetched, items, failed


@pytest.fixture
def web12():
    w = SyntheticWeb(hosts=12, pages_per_host=40, seed=3).start()
    yield w
    w.stop()


def test_a_spider_file_gives_one_item_per_page_it_reaches_and_nothing_else(
        ray_session, web12, tmp_path):
    spec = shipped_spider(tmp_path, raising=True)
    crawl = Crawl(seeds=[web12.seed_url], out=str(tmp_path / "out"), spider=spec, **FAST)
    stats = crawl.start().wait(timeout=240, interval_s=0.2)
    fetched, with_items, failed = spider_model(web12, raising=True)
    assert stats["phase"] == "finished", stats["reason"]
    pages = {r["url"]: r for r in crawl.pages().to_pylist()}
    assert set(pages) == fetched, "the crawl fetched a page the callbacks did not ask for"
    with web12.lock:
        requested = {f"http://{k}" for k in web12.hits if not k.endswith("/robots.txt")}
    assert requested == fetched
    items = crawl.items()
    urls = items.column("url").to_pylist()
    assert len(urls) == len(set(urls)) and set(urls) == with_items
    assert {pages[u]["error"] for u in failed} == {"callback-error"}
    assert all(pages[u]["status"] == 200 for u in failed)
    assert "KeyError" in pages[sorted(failed)[0]]["error_detail"]
    rows = {r["url"]: r for r in items.to_pylist()}
    assert rows[web12.seed_url]["kind"] == "seed"
    page = next(r for u, r in rows.items() if u != web12.seed_url and "/p/" in u)
    assert page["from"] == web12.seed_url and page["title"].startswith("host ")
    assert stats["items_total"] == len(with_items) == stats["items_written"]
    # At the end every file has the crawl's one schema: any Parquet reader sees every field.
    files = sorted((tmp_path / "out" / "items").glob("part-*.parquet"))
    assert len({pq.read_schema(f) for f in files}) == 1
    plain = pq.read_table(tmp_path / "out" / "items")
    assert {"url", "title", "kind", "links", "from", "depth"} <= set(plain.column_names)
    assert plain.num_rows == len(with_items)
    # ... and Ray Data reads the items (and the pages) as they are.
    dataset = crawl.dataset("items")
    assert dataset.count() == len(with_items)
    assert {"url", "title", "kind"} <= set(dataset.schema().names)
    assert crawl.dataset("pages").count() == len(fetched)
    assert stats["error_kinds"]["callback-error"] == len(failed)
    assert stats["callback_errors"] and "KeyError" in stats["callback_errors"][-1]


def crawl_killing(tmp_path, web: SyntheticWeb, victim: str, **where) -> tuple[
        Crawl, dict, set[str], set[str]]:
    """The example spider's crawl of ``web`` with WARC, small output files and ``victim``
    killed a third of the way (``where``: its ``out``, and ``state``); returns the crawl, its
    final stats, and the URLs it fetches and the pages that give an item by the model."""
    crawl = Crawl(seeds=[web.seed_url], spider=shipped_spider(tmp_path), warc=True,
                  warc_max_bytes=20_000,
                  **{**FAST, "partitions": 8, "batch_size": 16, "host_batch_cap": 4,
                     "batches_in_flight": 2, "retries": 0, "output_rows_per_file": 20,
                     "output_flush_s": 0.2}, **where)
    crawl.start()
    fetched, with_items, _ = spider_model(web)
    run_until(crawl, len(fetched))
    ray.kill(actor_named(f"{crawl.crawl_id}/{victim}"), no_restart=False)
    return crawl, crawl.wait(timeout=180, interval_s=0.2), fetched, with_items


@pytest.mark.parametrize("victim", ["db-worker-0/fetcher-", "db-worker-1", "strategy-worker-0",
                                    "coordinator"])
def test_items_are_exactly_once_and_warc_complete_when_workers_are_killed(ray_session, tmp_path,
                                                                          victim):
    web = SyntheticWeb(hosts=6, pages_per_host=30, seed=5, latency_s=0.02).start()
    try:
        crawl, stats, fetched, with_items = crawl_killing(tmp_path, web, victim,
                                                          out=str(tmp_path / "out"))
        assert stats["phase"] == "finished", stats["reason"]
        assert stats["errors"] == 0, stats["error_kinds"]
        urls = crawl.items().column("url").to_pylist()
        assert len(urls) == len(set(urls)), "an item was written twice"
        assert set(urls) == with_items, "an item is missing"
        assert check_every_row_has_its_records(crawl, web) == len(fetched)
    finally:
        web.stop()


def test_scope_keeps_links_to_allowed_hosts_and_patterns(ray_session, web, tmp_path):
    allowed = {web.address(h) for h in (0, 1)}
    crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"),
                  allow_domain=tuple(allowed), exclude=(r"/p/\d*[05](\?|$)",),
                  **{**FAST, "db_workers": 1, "strategy_workers": 1})
    stats = crawl.start().wait(timeout=180, interval_s=0.2)
    urls = crawl.pages().column("url").to_pylist()
    assert urls and all(u.split("/")[2].split(":")[0] in allowed for u in urls)
    assert not [u for u in urls if u != web.seed_url and "/p/" in u
                and u.split("/p/")[1].split("?")[0][-1] in "05"]
    assert stats["out_of_scope"] > 0


def test_the_cli_refuses_a_bad_spider_before_ray_starts(tmp_path):
    broken = tmp_path / "broken_spider.py"
    broken.write_text("def oops(:\n")
    for spec, message in [(f"{broken}:S", "does not import: SyntaxError"),
                          (f"{tmp_path}/nope.py:S", "does not exist"),
                          ("raycrawl.config:CrawlConfig", "not a raycrawl.Spider subclass")]:
        done = subprocess.run([sys.executable, "-m", "raycrawl", "crawl", "http://127.0.0.1:9/",
                               "--out", str(tmp_path / "out"), "--spider", spec],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr


def test_the_cli_crawls_with_a_spider_file_named_from_the_current_directory(
        ray_session, tmp_path):
    web = SyntheticWeb(hosts=3, pages_per_host=10, seed=11).start()
    try:
        work = tmp_path / "project"
        work.mkdir()
        shutil.copy(EXAMPLE, work / "myspider.py")
        (work / "crawl.toml").write_text('spider = "myspider.py:SynthSpider"\n'
                                         'allow-network = ["127.0.0.0/8"]\ndelay = 0\n')
        done = subprocess.run(
            [sys.executable, "-m", "raycrawl", "crawl", web.seed_url, "--out", "out",
             "--config", "crawl.toml", "--quiet", "--address", ray_session],
            cwd=work, capture_output=True, text=True, timeout=180,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert done.returncode == 0, done.stderr
        fetched, with_items, _ = spider_model(web)
        assert f"{len(with_items)} items in" in done.stdout
        status = subprocess.run([sys.executable, "-m", "raycrawl", "status", "--state",
                                 "out/state"], cwd=work, capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0 and f"{len(fetched)} URLs fetched" in status.stdout
    finally:
        web.stop()


KILLER = '''
import os
import raycrawl

class Killer(raycrawl.Spider):
    follow_links = True

    def parse(self, response):
        if response.url.endswith("/p/3"):
            os._exit(1)  # takes its fetch worker down, every time
        yield {"url": response.url}
'''


def test_a_callback_that_kills_its_worker_ends_only_its_url(ray_session, tmp_path):
    web = SyntheticWeb(hosts=2, pages_per_host=8, seed=2, specials=False).start()
    try:
        path = tmp_path / f"killer_{uuid.uuid4().hex[:6]}.py"
        path.write_text(KILLER)
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), spider=f"{path}:Killer",
                      **{**FAST, "db_workers": 1, "strategy_workers": 1, "fetch_retries": 1})
        stats = crawl.start().wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "finished", stats["reason"]
        rows = {r["url"]: r for r in crawl.pages().to_pylist()}
        poison = [u for u in rows if u.endswith("/p/3")]
        assert poison and all(rows[u]["error"] == "fetch-task-failed" for u in poison)
        others = [r for u, r in rows.items() if u not in poison]
        assert others and all(r["error"] is None and r["status"] == 200 for r in others)
        assert set(crawl.items().column("url").to_pylist()) == {r["url"] for r in others}
    finally:
        web.stop()
