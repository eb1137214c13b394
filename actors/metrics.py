"""A crawl's metrics on Ray's Prometheus endpoint (``ray.util.metrics``).

Every series is tagged with ``crawl_id`` and ``worker`` (``db-worker-N``), so one Prometheus
and one Grafana dashboard (``deploy/grafana/raycrawl.json``) serve every crawl of a cluster.
Ray prefixes the names with ``ray_`` and Prometheus adds ``_total`` to counters and
``_bucket``/``_sum``/``_count`` to histograms: :func:`exported_names` lists what a scrape shows.

The DB workers record them: counters when a batch is committed (so a batch fetched twice after
a fault counts once, like its rows), gauges on every report the coordinator reads (about once
a second).  Recording costs a few microseconds a page (``Counter.inc`` and
``Histogram.observe`` were measured at 2-3 µs a call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raycrawl.coordinator.reports import DBWorkerReport
from raycrawl.db_worker.shard import REASONS


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter, gauge or histogram
    description: str
    tags: tuple[str, ...] = ()  # besides crawl_id and worker


FETCH_SECONDS_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]

METRICS = (
    Metric("raycrawl_pages_fetched", "counter",
           "URLs completed with a row, by HTTP status class (1xx..5xx; none: no response)",
           ("status",)),
    Metric("raycrawl_errors", "counter", "rows ended with an error, by kind", ("kind",)),
    Metric("raycrawl_retries", "counter", "URLs queued again for another attempt"),
    Metric("raycrawl_robots_fetches", "counter",
           "robots.txt fetches, by outcome (rules, allow-all, unavailable)", ("outcome",)),
    Metric("raycrawl_bytes_fetched", "counter", "body bytes read"),
    Metric("raycrawl_items", "counter", "spider items committed"),
    Metric("raycrawl_fetch_seconds", "histogram", "time of one request, from start to body read"),
    Metric("raycrawl_queued", "gauge", "URLs queued in the DB worker"),
    Metric("raycrawl_queued_by_reason", "gauge",
           f"queued URLs by why they are not being fetched now ({', '.join(REASONS)})",
           ("reason",)),
    Metric("raycrawl_in_flight", "gauge", "URLs leased to batches being fetched or handed over"),
    Metric("raycrawl_hosts", "gauge",
           "hosts by state: active (being fetched), backed-off (failing), parked", ("state",)),
    Metric("raycrawl_fetch_workers", "gauge", "fetch workers (one CPU each) the DB worker holds"),
    Metric("raycrawl_revisits", "gauge",
           "URLs of a revisiting crawl by state: not-due (waiting for their next visit), due "
           "(queued), overdue (due more than 10 s ago)", ("state",)),
    Metric("raycrawl_partitions", "gauge", "partitions the DB worker owns"),
    Metric("raycrawl_partitions_moved", "gauge",
           "partitions moved to (in) and away from (out) the DB worker since it started",
           ("direction",)),
)

_BASE_TAGS = ("crawl_id", "worker")


def exported_names() -> set[str]:
    """The names of every series a Prometheus scrape of Ray's endpoint shows for raycrawl."""
    names: set[str] = set()
    for m in METRICS:
        base = f"ray_{m.name}"
        if m.kind == "counter":
            names.add(f"{base}_total")
        elif m.kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        else:
            names.add(base)
    return names


def status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


class CrawlMetrics:
    """The metrics of one DB worker; all ``ray.util.metrics`` objects are made here."""

    def __init__(self, crawl_id: str, worker: str) -> None:
        from ray.util import metrics

        self.tags = {"crawl_id": crawl_id, "worker": worker}
        made: dict[str, Any] = {}
        for m in METRICS:
            keys = (*_BASE_TAGS, *m.tags)
            if m.kind == "counter":
                made[m.name] = metrics.Counter(m.name, m.description, tag_keys=keys)
            elif m.kind == "gauge":
                made[m.name] = metrics.Gauge(m.name, m.description, tag_keys=keys)
            else:
                made[m.name] = metrics.Histogram(m.name, m.description,
                                                 boundaries=FETCH_SECONDS_BOUNDARIES,
                                                 tag_keys=keys)
        self._m = made

    def _inc(self, name: str, value: float, **tags: str) -> None:
        if value:
            self._m[name].inc(value, tags={**self.tags, **tags})

    def committed(self, pages: pa.RecordBatch, retries: int, items: int) -> None:
        """Count a committed batch: its rows by status class and error kind, their bytes and
        request times, the URLs queued again, the items."""
        if pages.num_rows:
            for status, n in _value_counts(pages.column("status")).items():
                self._inc("raycrawl_pages_fetched", n, status=status_class(status))
            for kind, n in _value_counts(pages.column("error")).items():
                if kind is not None:
                    self._inc("raycrawl_errors", n, kind=str(kind))
            self._inc("raycrawl_bytes_fetched",
                      int(pc.sum(pages.column("size_bytes")).as_py() or 0))
            durations = pages.column("duration_s").drop_null().to_numpy(zero_copy_only=False)
            histogram = self._m["raycrawl_fetch_seconds"]
            for seconds in np.asarray(durations, dtype=float):
                histogram.observe(float(seconds), tags=self.tags)
        self._inc("raycrawl_retries", retries)
        self._inc("raycrawl_items", items)

    def robots(self, outcomes: Mapping[str, int]) -> None:
        for outcome, n in outcomes.items():
            self._inc("raycrawl_robots_fetches", n, outcome=outcome)

    def report(self, report: DBWorkerReport, hosts: Mapping[str, int]) -> None:
        """Set the gauges from a worker's report and its hosts by state."""
        self._m["raycrawl_queued"].set(report.queued, tags=self.tags)
        for reason in REASONS:
            self._m["raycrawl_queued_by_reason"].set(report.queued_by_reason.get(reason, 0),
                                                     tags={**self.tags, "reason": reason})
        self._m["raycrawl_in_flight"].set(report.leased_urls, tags=self.tags)
        self._m["raycrawl_fetch_workers"].set(report.fetch_workers, tags=self.tags)
        for state, n in (("not-due", report.not_due), ("due", report.due),
                         ("overdue", report.overdue)):
            self._m["raycrawl_revisits"].set(n, tags={**self.tags, "state": state})
        for state, n in hosts.items():
            self._m["raycrawl_hosts"].set(n, tags={**self.tags, "state": state})
        self._m["raycrawl_partitions"].set(report.partitions_owned, tags=self.tags)
        for direction, n in (("in", report.moved_in), ("out", report.moved_out)):
            self._m["raycrawl_partitions_moved"].set(n, tags={**self.tags,
                                                              "direction": direction})


def _value_counts(column: pa.Array | pa.ChunkedArray) -> dict[Any, int]:
    counts = pc.value_counts(column)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
