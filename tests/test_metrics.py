"""The DB workers' metrics, counted exactly (ray.util.metrics replaced by fakes), and the names
a Prometheus scrape shows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from actors import metrics as crawl_metrics
from actors.metrics import METRICS, CrawlMetrics, exported_names, status_class
from raycrawl.coordinator.reports import DBWorkerReport


class _Fake:
    made: dict[str, _Fake] = {}

    def __init__(self, name, description="", tag_keys=(), boundaries=None):
        self.name, self.tag_keys, self.boundaries = name, tuple(tag_keys), boundaries
        self.values: dict[tuple, float] = {}
        self.observed: list[float] = []
        _Fake.made[name] = self

    def _key(self, tags):
        assert set(tags) == set(self.tag_keys), (self.name, tags)
        return tuple(sorted(tags.items()))

    def inc(self, value=1.0, tags=None):
        assert value > 0  # Ray's Counter refuses 0
        key = self._key(tags)
        self.values[key] = self.values.get(key, 0) + value

    def set(self, value, tags=None):
        self.values[self._key(tags)] = value

    def observe(self, value, tags=None):
        self._key(tags)
        self.observed.append(value)


@pytest.fixture
def fake_metrics(monkeypatch):
    from ray.util import metrics

    _Fake.made = {}
    for kind in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(metrics, kind, _Fake)
    return _Fake.made


def _pages(statuses, errors, sizes, durations):
    return pa.RecordBatch.from_pydict({
        "status": pa.array(statuses, pa.int32()), "error": pa.array(errors, pa.string()),
        "size_bytes": pa.array(sizes, pa.int64()), "duration_s": pa.array(durations)})


def _total(metric, **tags):
    return sum(v for k, v in metric.values.items() if all(dict(k).get(t) == x
                                                          for t, x in tags.items()))


def test_a_committed_batch_is_counted_by_status_class_kind_bytes_and_time(fake_metrics):
    m = CrawlMetrics("c1", "db-worker-0")
    m.committed(_pages([200, 200, 404, 500, None, 301], [None, None, None, None, "timeout",
                                                         None],
                       [100, 50, 10, 5, 0, 0], [0.1, 0.2, 0.05, 0.3, None, 0.01]),
                retries=2, items=7)
    pages = fake_metrics["raycrawl_pages_fetched"]
    assert {dict(k)["status"]: v for k, v in pages.values.items()} == {
        "2xx": 2, "4xx": 1, "5xx": 1, "none": 1, "3xx": 1}
    assert all(dict(k)["crawl_id"] == "c1" and dict(k)["worker"] == "db-worker-0"
               for k in pages.values)
    assert _total(fake_metrics["raycrawl_errors"], kind="timeout") == 1
    assert _total(fake_metrics["raycrawl_bytes_fetched"]) == 165
    assert sorted(fake_metrics["raycrawl_fetch_seconds"].observed) == [0.01, 0.05, 0.1, 0.2,
                                                                        0.3]
    assert _total(fake_metrics["raycrawl_retries"]) == 2
    assert _total(fake_metrics["raycrawl_items"]) == 7
    m.committed(_pages([], [], [], []), retries=0, items=0)  # nothing: no zero increments
    assert _total(pages) == 6


def test_gauges_and_robots_outcomes(fake_metrics):
    m = CrawlMetrics("c1", "db-worker-1")
    m.robots({"rules": 2, "allow-all": 1})
    m.report(DBWorkerReport(queued=40, leased_urls=12, fetch_workers=2),
             {"active": 3, "backed-off": 1, "parked": 0})
    assert _total(fake_metrics["raycrawl_robots_fetches"], outcome="rules") == 2
    assert _total(fake_metrics["raycrawl_queued"]) == 40
    assert _total(fake_metrics["raycrawl_in_flight"]) == 12
    assert _total(fake_metrics["raycrawl_hosts"], state="active") == 3
    assert _total(fake_metrics["raycrawl_fetch_workers"]) == 2


def test_exported_names_follow_prometheus_suffixes():
    names = exported_names()
    assert "ray_raycrawl_pages_fetched_total" in names
    assert {"ray_raycrawl_fetch_seconds_bucket", "ray_raycrawl_fetch_seconds_count"} <= names
    assert "ray_raycrawl_queued" in names
    assert len({m.name for m in METRICS}) == len(METRICS)
    assert status_class(None) == "none" and status_class(503) == "5xx"
    assert crawl_metrics.FETCH_SECONDS_BOUNDARIES == sorted(crawl_metrics.FETCH_SECONDS_BOUNDARIES)


def test_actor_log_lines_name_the_crawl_and_the_actor(capsys):
    import logging

    from actors.logs import LOGGERS, tag_logs

    saved = {n: (logging.getLogger(n).handlers, logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in LOGGERS}
    try:
        tag_logs("crawl-1", "db-worker-0/fetcher-ab-1")
        logging.getLogger("actors.fetch").warning("fetch of %d URLs failed", 3)
        logging.getLogger("raycrawl.fetch.hosts").info("an info line")
        logging.getLogger("raycrawl.fetch.hosts").debug("not shown")
    finally:
        for n, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].endswith("WARNING crawl-1 db-worker-0/fetcher-ab-1 actors.fetch: "
                           "fetch of 3 URLs failed")
    assert "INFO crawl-1 db-worker-0/fetcher-ab-1 raycrawl.fetch.hosts: an info line" in err[1]
