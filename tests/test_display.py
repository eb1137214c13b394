"""How a crawl shows itself: the one line, the HTML table, the progress bar, the live view,
and a Crawl's repr before it starts (no Ray)."""

from __future__ import annotations

import io
import time

import pytest

from raycrawl import Crawl
from raycrawl.coordinator.phases import Phase
from raycrawl.coordinator.reports import CrawlStatus, DBWorkerReport, StrategyWorkerReport
from raycrawl.display import LiveView, ProgressBar, status_html, status_line
from raycrawl.errors import CrawlStateError

STATUS = CrawlStatus(
    crawl_id="c<1>", phase=Phase.RUNNING, fetched=40, queued=60, errors=3,
    error_kinds={"timeout": 2, "robots": 1}, pages_per_s=12.5, fetch_workers=1,
    waiting="waiting for CPUs: 3 crawls share 2",
    db_workers=(DBWorkerReport(queued=30, leased_urls=8, fetched=20, fetch_workers=1,
                               partitions="0-127"),
                DBWorkerReport(queued=30, fetched=20, partitions="128-255", lenders=(0,))),
    strategy_workers=(StrategyWorkerReport(pages_crawled=40, scheduled=100,
                                           partitions="0-255"),),
    moving="DB partitions 3,9: worker 0 -> 2", moves_left=12,
    rescale_to={"db_workers": 3})


def test_the_line_and_the_table_say_what_the_crawl_does():
    line = status_line(STATUS)
    assert line.startswith("running: fetched 40, queued 60")
    assert "12.5 pages/s" in line and "waiting for CPUs" in line
    html = status_html(STATUS)
    assert "c&lt;1&gt;" in html  # escaped
    assert "timeout 2" in html and "robots 1" in html
    assert html.count("<td>db-worker-") == 2 and "strategy-worker-0" in html
    assert "waiting for CPUs" in html
    assert "<td>128-255</td>" in html and "<td>0-255</td>" in html  # each worker's partitions
    assert "<td>1</td><td>0-127</td>" in html  # its fetch workers; the other borrows them:
    assert "<td>0 (a guest of db-worker-0)</td><td>128-255</td>" in html
    assert "3 db workers: 12 partitions to move; moving DB partitions 3,9: worker 0 -&gt; 2" \
        in html


def test_the_line_says_what_queued_urls_wait_for_when_nothing_is_in_flight():
    db = (DBWorkerReport(queued=3, queued_by_reason={"retry-backoff": 1, "politeness": 2}),
          DBWorkerReport(queued=1, queued_by_reason={"robots-retry": 1}))
    s = CrawlStatus.aggregate(db, (), phase=Phase.RUNNING, stalls=1)
    assert s.queued == sum(s.queued_by_reason.values()) == 4
    assert status_line(s).endswith(
        "(queued: politeness 2, retry-backoff 1, robots-retry 1)")
    assert "politeness 2, retry-backoff 1, robots-retry 1" in status_html(s)
    assert "stalls" in status_html(s)
    busy = s.replace(in_flight_batches=1)
    assert "queued:" not in status_line(busy)


def test_a_revisiting_crawl_shows_its_revisits_due_overdue_and_freshness():
    assert "revisits" not in status_line(STATUS)  # not a revisiting crawl
    db = (DBWorkerReport(not_due=30, due=8, overdue=2, revisits=50),
          DBWorkerReport(not_due=50, due=12, overdue=0, revisits=25))
    s = CrawlStatus.aggregate(db, (), revisits_per_s=3.5)
    assert (s.not_due, s.due, s.overdue, s.revisits, s.freshness) == (80, 20, 2, 75, 0.8)
    line = status_line(s)
    assert "revisits 75 (3.5/s), due 20, overdue 2, fresh 80%" in line
    html = status_html(s)
    assert "overdue" in html and "80%" in html
    assert CrawlStatus.from_dict(s.to_dict()).freshness == 0.8


def test_the_progress_bar_counts_fetched_of_all_known():
    out = io.StringIO()
    bar = ProgressBar("c1", file=out, notebook=False)
    bar(STATUS)
    assert bar.bar.n == 40 and bar.bar.total == 40 + 60 + 8
    bar.close(STATUS.replace(phase=Phase.FINISHED, fetched=108, queued=0, db_workers=()))
    text = out.getvalue()
    assert "108/108" in text and "finished" in text


def test_the_live_view_refreshes_until_the_crawl_ends():
    statuses = iter([None, STATUS, STATUS.replace(phase=Phase.FINISHED)])
    view = LiveView(lambda: next(statuses), interval_s=0.01)
    view.thread.join(timeout=5)
    assert not view.running and view.updates == 2
    assert "finished" in view.widget.value
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()


def test_the_live_view_stops_when_told():
    view = LiveView(lambda: STATUS, interval_s=0.01)
    time.sleep(0.05)
    view.stop()
    view.thread.join(timeout=5)
    assert not view.running and view.updates >= 1


def test_a_crawl_not_started_says_so(tmp_path):
    crawl = Crawl(seeds=["http://example.com/"], out=str(tmp_path / "out"), crawl_id="c9")
    assert repr(crawl) == f"<raycrawl.Crawl c9 not started; out {tmp_path / 'out'}>"
    assert "not started" in crawl._repr_html_()
    with pytest.raises(ValueError, match="pages' or 'items'"):
        crawl.dataset("links")
    with pytest.raises(CrawlStateError, match="no pages written yet"):
        crawl.dataset("pages")
