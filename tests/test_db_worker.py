"""The DB worker's decisions (triage, retries, host health) on the plain class, without Ray."""

import dataclasses

import pyarrow as pa
import pytest

from actors.db_worker import DBWorker, _ended_rows
from raycrawl.config import CrawlConfig
from raycrawl.formats import schemas
from raycrawl.formats.output import read_pages
from raycrawl.frontier.queue import Entry
from raycrawl.frontier.robots import RobotsPolicy


@pytest.fixture
def worker(tmp_path):
    w = DBWorker(CrawlConfig(out=str(tmp_path), retries=1, host_park_after=2,
                             retry_backoff_s=1.0, delay_s=0.0), 0)
    yield w
    w.close()


def entry(i, host="h.com", attempts=0):
    return Entry(f"http://{host}/{i}", i + 1, host, 0, 0, 1.0, attempts)


def with_outcomes(entries, outcomes):
    """Spider-log rows for entries with (status, error, retry_after) outcomes."""
    rows = _ended_rows([(e, "x") for e in entries]).to_pydict()
    rows["status"] = [o[0] for o in outcomes]
    rows["error"] = [o[1] for o in outcomes]
    rows["retry_after_s"] = [o[2] for o in outcomes]
    return pa.RecordBatch.from_pydict(rows, schema=schemas.SPIDER_LOG_PAGES)


def test_retryable_outcomes_get_one_more_attempt(worker):
    es = [entry(0), entry(1), entry(2), entry(3, attempts=1)]
    pages, retry = worker._retries(with_outcomes(es, [
        (503, None, 30.0), (None, "timeout", None), (404, None, None), (500, None, None)]), es)
    assert [e.fingerprint for e in retry] == [1, 2]
    assert [e.attempts for e in retry] == [1, 1]
    assert pages.column("fingerprint").to_pylist() == [3, 4]  # 404, and 500 out of attempts
    assert worker.slots.ready_at["h.com"] >= 30.0  # Retry-After pushed the host back
    assert "h.com" not in worker.slots.failures  # it answered: healthy


def test_unreachable_host_parks_and_its_urls_end(worker):
    for _ in range(2):
        es = [entry(0), entry(1)]
        worker._retries(with_outcomes(es, [(None, "connection", None)] * 2), es)
    assert worker.slots.parked == {"h.com": "host-unreachable"}
    fetch, ended = worker._triage([entry(5), entry(6, host="ok.com")])
    assert [e.url for e, _ in fetch] == ["http://ok.com/6"]
    assert ended == [(entry(5), "host-unreachable")]


def test_cached_robots_decide_at_the_cut(worker):
    worker.robots.put("http://h.com", RobotsPolicy.from_fetch(
        200, b"User-agent: *\nDisallow: /1\nCrawl-delay: 4", 0.0, 1e12, 1.0))
    fetch, ended = worker._triage([entry(0), entry(1), entry(2, host="new.com")])
    assert [(e.url, needed) for e, needed in fetch] == [("http://h.com/0", False),
                                                         ("http://new.com/2", True)]
    assert ended == [(entry(1), "robots")]
    assert worker.slots.delay("h.com") == 4.0


def test_restart_requeues_leases_and_quarantines_poison(tmp_path):
    config = CrawlConfig(out=str(tmp_path), fetch_retries=2, delay_s=0.0)
    first = DBWorker(config, 0)
    first.queue.push([entry(0), dataclasses.replace(entry(1, host="g.com"), crashes=2)])
    batch_id, leased = first.queue.cut(10, 5, first.slots, None, 100)
    assert len(leased) == 2
    first.close()  # the worker "dies" with both URLs in flight
    second = DBWorker(config, 0)
    try:
        assert second.queue.stale_leases() == []
        assert second.queue.queued == 1  # the healthy URL is back, one crash counted
        _, again = second.queue.cut(10, 5, second.slots, None, 100)
        assert [(e.url, e.crashes) for e in again] == [("http://h.com/0", 1)]
        second.output.flush()
        rows = read_pages(config.pages_dir).to_pylist()
        assert [(r["url"], r["error"]) for r in rows] == [("http://g.com/1", "quarantined")]
    finally:
        second.close()
