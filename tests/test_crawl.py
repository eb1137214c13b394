"""End-to-end crawls on the session's local Ray against synthetic webs on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import ray
from aiohttp import web as aioweb

from raycrawl import Crawl
from raycrawl.api import read_status
from raycrawl.formats.streams import read_stream, stream_path
from raycrawl.strategy import CrawlingStrategy
from raycrawl.testing.synthweb import Link, SyntheticWeb
from tests.loopback import LoopbackSites

pytestmark = pytest.mark.ray

FAST = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 16, "retry_backoff_s": 0.05}
RETRIES = 2  # the default: a 500 is fetched three times


def crawl(web: SyntheticWeb, out, **settings):
    """A crawl of ``web`` to its end.  One fetch worker per DB worker unless a test asks: the
    default, the session's two CPUs, is a process more in a crawl of one DB worker (about
    1.5 s of CPU on this suite's two busy cores) and proves nothing more."""
    settings.setdefault("fetch_workers", settings.get("db_workers", 1))
    c = Crawl(seeds=[web.seed_url], out=str(out), **{**FAST, **settings}).start()
    stats = c.wait(timeout=180, interval_s=0.2)
    return stats, c.pages()


def relative(web: SyntheticWeb, urls) -> list[str]:
    """URLs with each host's origin replaced by its index, to compare two webs' crawls."""
    origins = {web.origin(h): f"h{h}" for h in range(web.hosts)}
    out = []
    for url in urls:
        origin = url[: url.index("/", len("http://"))]
        out.append(origins[origin] + url[len(origin):])
    return sorted(out)


def test_every_reachable_url_is_fetched_exactly_once(ray_session, web, tmp_path):
    stats, pages = crawl(web, tmp_path / "out")
    expected = web.reachable()
    urls = pages.column("url").to_pylist()
    assert stats["phase"] == "finished" and stats["reason"] == "no work left"
    assert len(urls) == len(set(urls)), "a URL has two rows"
    assert set(urls) == set(expected)
    assert web.unexpected_hits(expected, RETRIES + 1, robots=True) == {}, \
        "a URL was requested more often than it should, or not at all"
    # The contract's columns and types.
    for name, kind in [("url", pa.string()), ("status", pa.int32()), ("depth", pa.int32()),
                       ("content_type", pa.string()), ("error", pa.string())]:
        assert pages.schema.field(name).type == kind
    assert pages.schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    rows = {r["url"]: r for r in pages.to_pylist()}
    kinds = {"/p/": 200, "/r/": 302, "/e/": 500, "/missing/": 404, "/bin/": 200}
    for url, row in rows.items():
        assert row["status"] == next(s for k, s in kinds.items() if k in url), url
        assert row["error"] is None
        assert row["depth"] >= expected[url]  # discovery depth; exact with --max-depth
        # a redirect names its target, which has its own row
        assert (row["location"] in rows) if row["status"] == 302 else row["location"] is None
    assert any("/bin/" in u and rows[u]["content_type"] == "application/octet-stream"
               for u in rows)
    assert stats["fetched"] == stats["rows_written"] == len(urls)


def test_two_plus_two_workers_give_the_same_crawl_as_one_plus_one(ray_session, tmp_path):
    results = []
    for workers in (1, 2):
        web = SyntheticWeb(hosts=10, pages_per_host=20, seed=11).start()
        try:
            stats, pages = crawl(web, tmp_path / f"out{workers}", strategy_workers=workers,
                                 db_workers=workers)
            expected = web.reachable()
            assert web.unexpected_hits(expected, RETRIES + 1, robots=True) == {}
            assert len(stats["db_workers"]) == len(stats["strategy_workers"]) == workers
            assert all(w["fetched"] > 0 for w in stats["db_workers"])
            rows = pages.to_pylist()
            results.append((relative(web, [r["url"] for r in rows]),
                            sorted((u, r["status"]) for u, r in zip(
                                relative(web, [r["url"] for r in rows]), rows))))
        finally:
            web.stop()
    assert results[0][0] == results[1][0]
    assert len(results[0][0]) == len(set(results[0][0]))


def test_max_depth_fetches_exactly_the_pages_within_reach(ray_session, web, tmp_path):
    stats, pages = crawl(web, tmp_path / "out", max_depth=2, strategy_workers=2, db_workers=2)
    expected = web.reachable(max_depth=2)
    got = {r["url"]: r["depth"] for r in pages.to_pylist()}
    assert got == expected  # the right URLs, each at its shortest depth
    assert web.unexpected_hits(expected, RETRIES + 1, robots=True) == {}
    assert stats["depth_gate"] == 2


def test_max_pages_is_exact(ray_session, web, tmp_path):
    stats, pages = crawl(web, tmp_path / "out", max_pages=37, db_workers=2, batch_size=8,
                         robots=False, retries=0)
    urls = pages.column("url").to_pylist()
    assert len(urls) == len(set(urls)) == 37
    assert set(urls) <= set(web.reachable())
    assert stats["reason"] == "max pages reached"
    assert sum(web.hits.values()) == 37


def test_dfs_covers_the_same_web_and_logs_streams(ray_session, web, tmp_path):
    stats, pages = crawl(web, tmp_path / "out", strategy="dfs", log_streams=True, codec="json",
                         db_workers=2)
    assert sorted(pages.column("url").to_pylist()) == sorted(web.reachable())
    fetched = []
    for worker in (0, 1):
        path = stream_path(str(tmp_path / "out"), worker, "json")
        fetched += [m[1].url for m in read_stream(path, "json") if m[0] == "page_crawled"]
    assert sorted(fetched) == sorted(pages.column("url").to_pylist())


def test_refused_seed_ends_visibly(ray_session, web, tmp_path):
    stats, pages = crawl(web, tmp_path / "out", allow_network=())
    assert pages.to_pylist()[0]["error"] == "blocked-address"
    assert pages.num_rows == 1 and stats["error_kinds"] == {"blocked-address": 1}
    assert sum(web.hits.values()) == 0


def fetch_workers(crawl_id: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"{crawl_id}/db-worker-") and "/fetcher-" in a["name"]]


def test_api_pause_resume_add_seeds_attach_and_actor_names(ray_session, tmp_path):
    web = SyntheticWeb(hosts=6, pages_per_host=15, seed=3).start()
    other = SyntheticWeb(hosts=1, pages_per_host=3, seed=4, first_address=40).start()
    try:
        c = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"),
                  **{**FAST, "delay_s": 0.05, "strategy_workers": 2, "db_workers": 2,
                     "robots": False, "retries": 0})
        c.start()
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "raycrawl"}
        cid = c.crawl_id
        assert {f"{cid}/coordinator", f"{cid}/db-worker-0", f"{cid}/db-worker-1",
                f"{cid}/strategy-worker-0", f"{cid}/strategy-worker-1"} <= names
        deadline = time.monotonic() + 30
        while not fetch_workers(cid):
            assert time.monotonic() < deadline, "no fetch worker started"
            time.sleep(0.05)
        assert c.pause() == "paused"  # returns once batches in flight are done
        # A paused crawl lets its fetch workers go: it holds no CPU.
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
            assert time.monotonic() < deadline, "a paused crawl still holds CPUs"
            time.sleep(0.1)
        assert not fetch_workers(cid)
        frozen = c.stats()["fetched"]
        assert frozen == sum(web.hits.values())
        time.sleep(0.6)
        assert c.stats()["fetched"] == frozen and c.stats()["phase"] == "paused"
        assert c.add_seeds([other.seed_url, "not a url"])["accepted"] == 1
        again = Crawl.attach(os.path.join(str(tmp_path / "out"), "state"))
        assert again.crawl_id == cid
        assert again.resume() == "running"
        stats = again.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "finished"
        urls = set(c.pages().column("url").to_pylist())
        assert urls == set(web.reachable()) | set(other.reachable())
    finally:
        web.stop()
        other.stop()


def test_stop_drains_and_writes_output(ray_session, tmp_path):
    web = SyntheticWeb(hosts=4, pages_per_host=40, seed=5).start()
    try:
        c = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"),
                  **{**FAST, "delay_s": 0.1, "robots": False, "retries": 0})
        c.start()
        deadline = time.monotonic() + 60
        while c.stats()["fetched"] < 5:  # under way: stopped mid-crawl
            assert time.monotonic() < deadline, "the crawl did not get going"
            time.sleep(0.05)
        stats = c.stop()
        assert stats["phase"] == "stopped"
        urls = c.pages().column("url").to_pylist()
        assert 0 < len(urls) < len(web.reachable()) and len(urls) == len(set(urls))
        assert len(urls) == sum(web.hits.values())  # every fetched URL has its row
    finally:
        web.stop()


def test_cli_crawl_and_status(ray_session, web, tmp_path):
    out = tmp_path / "out"
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"# the synthetic web\n{web.seed_url}\n")
    config = tmp_path / "crawl.toml"
    config.write_text('[crawl]\ndelay = 0.0\npoll_interval_s = 0.05\nmax-depth = 5\n')
    run = subprocess.run(
        [sys.executable, "-m", "raycrawl.cli", "crawl", "--seeds-file", str(seeds),
         "--out", str(out), "--max-depth", "1", "--allow-network", "127.0.0.0/8",
         "--address", ray_session, "--config", str(config), "--strategy-workers", "2",
         "--db-workers", "2", "--partitions", "8", "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "finished" in run.stdout
    table = ds.dataset(str(out / "pages"), format="parquet").to_table()
    assert sorted(table.column("url").to_pylist()) == sorted(web.reachable(max_depth=1))
    status = subprocess.run([sys.executable, "-m", "raycrawl.cli", "status", "--state",
                             str(out / "state")], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "finished" in status.stdout
    assert "db-worker-1" in status.stdout
    assert "partitions 1,3,5,7" in status.stdout  # (each worker's partitions)
    # The same --out for a second crawl (another state): refused before anything is touched.
    files = sorted(p.name for p in (out / "pages").iterdir())
    again = subprocess.run(
        [sys.executable, "-m", "raycrawl.cli", "crawl", web.seed_url, "--out", str(out),
         "--state", str(tmp_path / "other-state"), "--address", ray_session, "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "holds the pages of crawl" in again.stderr
    assert sorted(p.name for p in (out / "pages").iterdir()) == files
    # A new crawl in a state folder that holds one: refused too (resume continues it).
    again = subprocess.run(
        [sys.executable, "-m", "raycrawl.cli", "crawl", web.seed_url, "--out",
         str(tmp_path / "out2"), "--state", str(out / "state"), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "raycrawl resume" in again.stderr, again.stderr


def test_an_abandoned_crawl_finishes_and_frees_its_actors(ray_session, tmp_path):
    web = SyntheticWeb(hosts=2, pages_per_host=5, seed=9).start()
    try:
        c = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), **{**FAST, "linger_s": 0.5})
        c.start()  # and never wait(): as if the driver had been killed
        deadline = time.monotonic() + 60
        mine = {c.crawl_id}
        while mine and time.monotonic() < deadline:
            time.sleep(0.3)
            mine = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith(c.crawl_id + "/")}
        assert not mine, f"actors left behind: {mine}"
        assert sorted(c.pages().column("url").to_pylist()) == sorted(web.reachable())
        assert read_status(str(tmp_path / "out" / "state"))["phase"] == "finished"
    finally:
        web.stop()


HAND_OVER_S = 5.0


class SlowHandOver(CrawlingStrategy):
    """Takes HAND_OVER_S over every page: each batch's hand-over lasts that long."""

    def page_crawled(self, response) -> None:
        time.sleep(HAND_OVER_S)


def test_a_host_is_released_when_its_fetch_ends(ray_session, tmp_path):
    web = SyntheticWeb(hosts=1, pages_per_host=10, seed=5, specials=False).start()
    try:
        seeds = [web.url(Link("p", 0, i)) for i in range(1, 4)]
        c = Crawl(seeds=seeds, out=str(tmp_path / "out"), **{
            **FAST, "per_host": 1, "batch_size": 1, "max_depth": 0, "no_robots": True,
            "strategy": "tests.test_crawl:SlowHandOver"}).start()
        stats = c.wait(timeout=120, interval_s=0.2)
        assert stats["phase"] == "finished"
        assert sorted(c.pages().column("url").to_pylist()) == sorted(seeds)
        starts = sorted(web.starts[0])
        assert len(starts) == 3 and web.max_active[0] == 1
        # One batch of the host at a time, but the next one starts when the previous fetch
        # ends, not after the strategy worker's hand-over of the previous page: well within
        # half the hand-over (a loaded machine took 1.15 s once; released after the hand-over
        # it would be more than all of it).
        assert starts[1] - starts[0] < HAND_OVER_S / 2, starts
    finally:
        web.stop()


class _SlowAndFast(LoopbackSites):
    """Two hosts: SLOW answers after 3 s, FAST at once; every request's start and end."""

    addresses = ("127.0.0.70", "127.0.0.71")

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[str, list[tuple[float, float]]] = {a: [] for a in self.addresses}

    def _app(self, address: str) -> aioweb.Application:
        async def page(request: aioweb.Request) -> aioweb.Response:
            started = time.monotonic()
            if address == self.addresses[0]:
                await asyncio.sleep(3.0)  # the fast host's 4 more batches fit in it, loaded
            with self.lock:
                self.spans[address].append((started, time.monotonic()))
            return aioweb.Response(text="<html></html>", content_type="text/html")

        app = aioweb.Application()
        app.router.add_get("/{p}", page)
        return app


def test_a_host_is_released_when_its_own_fetch_ends_not_its_batchs(ray_session, tmp_path):
    """A batch with a slow host and a fast one: the fast host's next URL is fetched while
    the slow one's first request still runs (each batch takes one URL a host), and neither
    host ever sees two requests at once."""
    web = _SlowAndFast().start()
    slow, fast = (web.origin(a) for a in web.addresses)
    try:
        seeds = [f"{slow}/s{i}" for i in range(2)] + [f"{fast}/f{i}" for i in range(5)]
        c = Crawl(seeds=seeds, out=str(tmp_path / "out"), **{
            **FAST, "per_host": 1, "host_batch_cap": 1, "max_depth": 0, "no_robots": True,
            "db_workers": 1}).start()
        stats = c.wait(timeout=120, interval_s=0.2)
        assert stats["phase"] == "finished"
        assert sorted(c.pages().column("url").to_pylist()) == sorted(seeds)
        with web.lock:
            spans = {a: sorted(s) for a, s in web.spans.items()}
        assert [len(s) for s in spans.values()] == [2, 5]
        for s in spans.values():  # one request at a time per host
            assert all(end <= nxt for (_, end), (nxt, _) in zip(s, s[1:])), s
        # The fast host's next URL went while the slow host's first request still ran
        # (released only when its batch ended, it would have waited 3 s for the slow one).
        first_slow_end = spans[web.addresses[0]][0][1]
        assert spans[web.addresses[1]][1][0] < first_slow_end, spans
    finally:
        web.stop()


class _OneServer(LoopbackSites):
    """One server on 127.0.0.1 (``localhost`` too: two hosts, one address); each request
    takes 0.2 s; the most requests it had at once."""

    addresses = ("127.0.0.1",)

    def __init__(self) -> None:
        super().__init__()
        self.active = self.most = 0

    def _app(self, address: str) -> aioweb.Application:
        async def page(request: aioweb.Request) -> aioweb.Response:
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                await asyncio.sleep(0.2)
            finally:
                with self.lock:
                    self.active -= 1
            return aioweb.Response(text="<html></html>", content_type="text/html")

        app = aioweb.Application()
        app.router.add_get("/{p}", page)
        return app


@pytest.mark.parametrize("per_ip, most", [(None, 2), (1, 1)])
def test_per_ip_holds_for_hosts_that_share_an_address(ray_session, tmp_path, per_ip, most):
    web = _OneServer().start()
    port = web.ports["127.0.0.1"]
    try:
        seeds = [f"http://{host}:{port}/{i}" for host in ("127.0.0.1", "localhost")
                 for i in range(4)]
        c = Crawl(seeds=seeds, out=str(tmp_path / "out"), **{
            **FAST, "per_host": 1, "max_depth": 0, "no_robots": True, "fetch_workers": 1,
            "db_workers": 1, "per_ip": per_ip}).start()
        stats = c.wait(timeout=120, interval_s=0.2)
        assert stats["phase"] == "finished"
        assert sorted(c.pages().column("url").to_pylist()) == sorted(seeds)
        assert web.most == most  # without per_ip, each host is polite on its own
    finally:
        web.stop()
