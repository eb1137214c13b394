"""Spiders without Ray: callbacks on fetched pages, items, follows, callback errors, loading."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raycrawl
from raycrawl.config import CrawlConfig
from raycrawl.errors import SpiderError
from raycrawl.fetch.options import FetchOptions
from raycrawl.formats import schemas
from raycrawl.formats.entry import unpack_meta
from raycrawl.formats.items import conform, items_table, read_items, unified_schema
from raycrawl.spider import load_spider, spider_spec
from raycrawl.testing.synthweb import Link
from raycrawl.urls import url_info
from tests.inprocess import fetch_feed

P = 16


class Pages(raycrawl.Spider):
    """Items and follows of every kind a callback yields."""

    def parse(self, response):
        yield {"title": response.css("title::text").get(), "status": response.status,
               "meta": dict(response.meta), "depth": response.depth, "url": response.url}
        first = response.xpath("//li/a/@href").get()
        yield response.follow(first, callback=self.parse_next, meta={"n": 1}, priority=5)

    def parse_next(self, response):
        return [{"next": True}]


class Broken(raycrawl.Spider):
    def parse(self, response):
        index = int(response.url.rsplit("/", 1)[1].split("?")[0])
        if index == 1:
            raise ValueError("no price on this page")
        if index == 2:
            yield 42  # neither an item nor a follow
        if index == 3:
            yield {"when": time}  # not an item value
        if index == 4:
            while True:  # runs until cut off
                pass
        if index == 5:
            time.sleep(4)  # stuck in C: its thread is left behind
        if index == 7:
            raise SystemExit(3)
        yield {"ok": index}


class FollowAll(raycrawl.Spider):
    follow_links = True

    def parse(self, response):
        yield {"t": response.css("title::text").get()}


def options(spider, **settings):
    spec, code = spider_spec(spider)
    return FetchOptions.from_config(CrawlConfig(
        partitions=P, delay_s=0.0, allow_network=("127.0.0.0/8",), spider=spec,
        spider_code=code, **settings))


def run(web, indexes, opts, meta=None):
    infos = [url_info(web.url(Link("p", 0, i)), P) for i in indexes]
    feed = schemas.feed_batch(infos)
    if meta is not None:
        feed = feed.set_column(feed.schema.get_field_index("meta"), "meta",
                               pa.array([msgpack.packb(meta)] * len(infos), pa.binary()))
    return asyncio.run(fetch_feed(feed, opts))


def test_a_callback_yields_items_and_follows_with_callback_meta_and_priority(web):
    result = run(web, [1], options(Pages), meta={"from": "seed"})
    page = result.pages.to_pylist()[0]
    assert page["status"] == 200 and page["error"] is None and page["items_count"] == 1
    item = msgpack.unpackb(result.items.column("item")[0].as_py())
    assert item == {"title": "host 0 page 1", "status": 200, "meta": {"from": "seed"},
                    "depth": 0, "item_url": web.url(Link("p", 0, 1))}
    # Only the followed link, not the page's other links.
    links = result.links.to_pylist()
    assert [(lk["url"], lk["callback"], unpack_meta(lk["meta"]), lk["priority"], lk["depth"])
            for lk in links] == [(web.url(Link("p", 0, 2)), "parse_next", {"n": 1}, 5.0, 1)]


def test_follow_links_adds_every_link_after_the_follows(web):
    result = run(web, [1], options(FollowAll))
    targets = {web.url(t) for t in web.links(0, 1)}
    assert {lk["url"] for lk in result.links.to_pylist()} == targets
    assert all(lk["callback"] is None for lk in result.links.to_pylist())
    assert result.items.num_rows == 1


def test_callback_errors_end_only_their_page_with_the_status_kept(web):
    started = time.monotonic()
    result = run(web, [0, 1, 2, 3, 4, 5, 6, 7], options(Broken, callback_timeout_s=0.5))
    assert time.monotonic() - started < 4  # the stuck callback was not waited for
    rows = {int(r["url"].rsplit("/", 1)[1].split("?")[0]): r for r in result.pages.to_pylist()}
    for i in (1, 2, 3, 4, 5):
        assert rows[i]["status"] == 200 and rows[i]["error"] == "callback-error", rows[i]
        assert rows[i]["items_count"] == 0
    assert "ValueError: no price" in rows[1]["error_detail"]
    assert "int" in rows[2]["error_detail"] and "module" in rows[3]["error_detail"]
    assert "longer than 0.5 s" in rows[4]["error_detail"]
    assert "longer than 0.5 s" in rows[5]["error_detail"]
    assert rows[7]["error"] == "callback-error" and "SystemExit" in rows[7]["error_detail"]
    assert rows[0]["error"] is None and rows[6]["error"] is None  # after the stuck one too
    items = [msgpack.unpackb(r) for r in result.items.column("item").to_pylist()]
    assert sorted(i["ok"] for i in items) == [0, 6]
    assert result.links.num_rows == 0  # the failed callbacks' follows are dropped


def test_a_spider_that_does_not_load_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad_spider.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(SpiderError, match="does not import: ModuleNotFoundError"):
        load_spider(f"{bad}:Spider")
    plain = tmp_path / "plain_spider.py"
    plain.write_text("class NotASpider:\n    pass\n")
    with pytest.raises(SpiderError, match="not a raycrawl.Spider subclass"):
        load_spider(f"{plain}:NotASpider")
    with pytest.raises(SpiderError, match="does not exist"):
        load_spider(f"{tmp_path / 'missing.py'}:S")
    with pytest.raises(SpiderError, match="does not import"):
        load_spider("no_such_package.spiders:S")
    with pytest.raises(SpiderError, match="expected FILE.py:Class"):
        load_spider("just_a_name")


def test_spiders_load_from_a_file_a_module_and_a_class(tmp_path, monkeypatch):
    path = tmp_path / "my_spider_file.py"
    path.write_text("import raycrawl\nclass S(raycrawl.Spider):\n    follow_links = True\n")
    assert load_spider(f"{path}:S").follow_links is True
    # A module the driver imported from the file itself is used, not replaced by a copy.
    mine = tmp_path / "imported_spider_mod.py"
    mine.write_text("import raycrawl\nclass S(raycrawl.Spider):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("imported_spider_mod")
    assert load_spider(f"{mine}:S", source=mine.read_text()) is module.S
    assert sys.modules["imported_spider_mod"] is module
    assert load_spider("tests.test_spider_unit:Pages") is Pages
    assert spider_spec(Pages) == ("tests.test_spider_unit:Pages", None)
    local = type("Local", (raycrawl.Spider,), {"__module__": "__main__"})
    spec, code = spider_spec(local)
    assert spec == "__main__:Local" and code is not None
    assert load_spider(spec, code).__name__ == "Local"


def item_batch(items):
    return pa.RecordBatch.from_pydict(
        {"url": ["http://a/"] * len(items), "fingerprint": [1] * len(items),
         "item": [msgpack.packb(i) for i in items]}, schema=schemas.ITEMS)


def test_item_columns_take_their_types_and_disagreeing_fields_become_json(tmp_path):
    table = items_table([item_batch([{"price": 3, "name": "x", "tags": ["a"]},
                                     {"price": 2.5, "mixed": 1},
                                     {"mixed": "one", "blob": b"\x00"}])])
    assert table.column_names == ["url", "price", "name", "tags", "mixed", "blob"]
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.schema.field("mixed").type == pa.string()
    assert table.column("mixed").to_pylist() == [None, "1", '"one"']
    # Across files: a field typed differently in two files is read as JSON in both.
    pq.write_table(items_table([item_batch([{"a": 1, "b": 1}])]),
                   tmp_path / "part-000-000000.parquet")
    pq.write_table(items_table([item_batch([{"a": "x", "b": 2.5, "c": True}])]),
                   tmp_path / "part-001-000000.parquet")
    both = read_items(str(tmp_path))
    assert both.column("a").to_pylist() == ["1", '"x"']
    assert both.column("b").to_pylist() == [1.0, 2.5]
    assert both.column("c").to_pylist() == [None, True]


def test_item_files_are_rewritten_to_one_schema_and_a_crash_loses_nothing(tmp_path):
    from raycrawl.output.durable import ITEM_KEYS, DurableOutput
    from raycrawl.storage.store import Store

    store = Store(str(tmp_path / "db"))
    out = DurableOutput(store, str(tmp_path / "items"), 0, 100, 60, keys=ITEM_KEYS,
                        to_table=items_table)
    for items in ([{"a": 1}], [{"a": "x", "b": [1]}]):
        wb = store.batch()
        staged = out.stage(wb, item_batch(items))
        store.write(wb)
        out.apply(staged)
        out.flush()
    first = sorted(out.recorded())
    schema = unified_schema([pq.read_schema(tmp_path / "items" / n) for n in first])
    assert out.rewrite(schema, conform) == 2
    assert out.rewrite(schema, conform) == 0  # done: nothing left to change
    names = sorted(out.recorded())
    assert not set(names) & set(first)
    assert sorted(os.listdir(tmp_path / "items")) == names  # the old files are gone
    table = pq.read_table(tmp_path / "items")
    assert table.column("a").to_pylist() == ["1", '"x"'] and table.num_rows == 2
    store.close()
    # Reopened (as after a crash): the recorded files are all there is, nothing is lost.
    again = DurableOutput(Store(str(tmp_path / "db")), str(tmp_path / "items"), 0, 100, 60,
                          keys=ITEM_KEYS, to_table=items_table)
    assert again.rows_written == 2 and sorted(again.recorded()) == names


class Seeded(raycrawl.Spider):
    start_urls = ["http://127.0.0.1:9/start"]

    def parse(self, response):
        yield {}


def test_a_crawl_checks_its_spider_before_ray_and_takes_its_start_urls(tmp_path, monkeypatch):
    crawl = raycrawl.Crawl(out=str(tmp_path / "out"), spider=Seeded)
    assert crawl.config.spider == "tests.test_spider_unit:Seeded"
    assert crawl.check() == ["http://127.0.0.1:9/start"]
    assert raycrawl.Crawl(out=str(tmp_path), seeds=["http://127.0.0.1:9/a"],
                          spider=Seeded).check() == ["http://127.0.0.1:9/a"]
    path = tmp_path / "relative_spider.py"
    path.write_text("import raycrawl\nclass S(raycrawl.Spider):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    crawl = raycrawl.Crawl(out="out", seeds=["http://127.0.0.1:9/"], spider="relative_spider.py:S")
    crawl.check()  # the file is read here and its path made absolute, for the workers
    assert crawl.config.spider == f"{path}:S" and "class S" in crawl.config.spider_source
    with pytest.raises(SpiderError, match="does not exist"):
        raycrawl.Crawl(out="out", seeds=["http://127.0.0.1:9/"], spider="gone.py:S").check()


def test_follow_takes_an_age_in_seconds():
    from raycrawl.spider import SpiderResponse

    page = SpiderResponse("http://a.com/x/", 200, {}, b"<html></html>", {}, 0)
    assert page.follow("y", age=30).age_s == 30.0 and page.follow("y").age_s is None
    for bad in (0, -1, "soon", True):
        with pytest.raises(TypeError):
            page.follow("y", age=bad)
