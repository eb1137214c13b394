"""``--out s3://...``: a crawl whose output is on an S3-compatible store (moto's server on
loopback, reached through ``AWS_ENDPOINT_URL``), its stores in a local ``--state``.  Pages,
items, WARC and streams land there (pages and items exactly once) through kills and a crash
between a file's upload and its record, and the crawl is read, followed and resumed from its URI
alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from raycrawl import Crawl
from raycrawl.errors import ConfigError, CrawlStateError
from raycrawl.formats.items import read_items
from raycrawl.formats.streams import read_stream, stream_path
from raycrawl.output.durable import read_pages
from raycrawl.storage.location import Location
from raycrawl.testing import faults
from raycrawl.testing.synthweb import SyntheticWeb
from tests.test_faults import SETTINGS, assert_invariants, run_until, slow_web
from tests.test_spiders import crawl_killing
from tests.test_warc import check_every_row_has_its_records


def test_an_out_uri_needs_a_local_state_folder_and_a_known_scheme(tmp_path):
    with pytest.raises(ConfigError, match="state: is required with an --out URI"):
        Crawl(seeds=["http://127.0.0.1:1/"], out="s3://bucket/crawl")
    with pytest.raises(ConfigError, match="cannot reach nosuchfs://x"):
        Location.of("nosuchfs://x/y")
    assert Location.of(f"file://{tmp_path}/out").uri == f"{tmp_path}/out"
    with pytest.raises(ConfigError, match="has a query or fragment; .*AWS_ENDPOINT_URL"):
        Location.of("s3://bucket/crawl?endpoint_override=127.0.0.1:9000")


def test_status_and_resume_of_an_out_without_a_crawl_say_so(s3):
    out = f"s3://{s3.bucket()}/nothing"
    for command in (["status", "--out", out], ["resume", "--out", out]):
        run = subprocess.run([sys.executable, "-m", "raycrawl", *command], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
        assert run.returncode == 2 and f"no crawl in {out}" in run.stderr, run.stderr


@pytest.mark.ray
@pytest.mark.parametrize("victim", ["db-worker-0/fetcher-", "db-worker-1"])
def test_a_crawl_to_s3_writes_it_all_there_once_and_is_read_from_its_uri(ray_session, s3,
                                                                        tmp_path, victim):
    """A fetch worker killed: its spooled WARC file goes up when a worker takes its name; a
    DB worker killed: its restart uploads its fetch workers' spooled files and its stream."""
    web = SyntheticWeb(hosts=6, pages_per_host=30, seed=5, latency_s=0.02).start()
    out = f"s3://{s3.bucket()}/crawls/first"
    state = tmp_path / "state"
    try:
        crawl, stats, fetched, with_items = crawl_killing(
            tmp_path, web, victim, out=out, state=str(state), log_streams=True)
        assert stats["phase"] == "finished", stats["reason"]
        assert stats["errors"] == 0, stats["error_kinds"]

        urls = read_pages(f"{out}/pages").column("url").to_pylist()
        assert sorted(urls) == sorted(fetched), "a page missing or twice"
        items = read_items(f"{out}/items").column("url").to_pylist()
        assert sorted(items) == sorted(with_items), "an item missing or twice"
        assert check_every_row_has_its_records(crawl, web) == len(fetched)
        assert os.listdir(state / "warc-spool") == []  # every WARC file uploaded
        logged = {m[1].url for worker in (0, 1) for m in read_stream(
            stream_path(out, worker, "msgpack"), "msgpack") if m[0] == "page_crawled"}
        assert logged == fetched  # each DB worker's stream uploaded whole, nothing lost by
        # the kill (a re-fetch after it may log a URL twice: the stream is a log)
        assert not (tmp_path / "out").exists() and sorted(os.listdir(tmp_path)) == [
            "spiders", "state"]  # nothing of OUT on this disk
        assert crawl.dataset("items").count() == len(with_items)

        shown = subprocess.run([sys.executable, "-m", "raycrawl", "status", "--out", out],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert f"crawl {crawl.crawl_id}" in shown.stdout and "finished" in shown.stdout
        assert f"{len(fetched)} URLs fetched" in shown.stdout
        with pytest.raises(CrawlStateError, match="has finished"):
            Crawl.attach(out)
    finally:
        web.stop()


@pytest.mark.ray
def test_a_crash_between_upload_and_record_then_a_resume_from_the_uri(ray_session, s3,
                                                                      tmp_path):
    """The DB worker dies with a part file uploaded but not recorded: its restart deletes it
    and writes its rows again.  Then the crawl is stopped and resumed by its URI alone."""
    web: SyntheticWeb = slow_web(seed=47)
    out = f"s3://{s3.bucket()}/crawl"
    state = str(tmp_path / "state")
    try:
        faults.arm(state, "db-worker.output-written")
        crawl = Crawl(seeds=[web.seed_url], out=out, state=state, output_flush_s=0.2,
                      **SETTINGS).start()
        run_until(crawl, len(web.reachable()), 0.5)
        assert faults.fired(state, "db-worker.output-written"), "never fired"
        assert crawl.stop()["phase"] == "stopped"
        resumed = Crawl.attach(out)
        assert resumed.crawl_id == crawl.crawl_id and resumed.config.out == out
        stats = resumed.wait(timeout=180, interval_s=0.2)
        assert stats["generation"] == 2
        assert_invariants(web, resumed, stats)
        s3fs = Location.of(out).fs
        names = [i.base_name for i in s3fs.get_file_info(pafs.FileSelector(
            Location.of(out).path("pages")))]
        assert names and all(n.startswith("part-") for n in names)  # nothing half-written
    finally:
        web.stop()
