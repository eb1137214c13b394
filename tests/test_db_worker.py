"""The DB shard's decisions (triage, retries, host health, restart) without Ray."""

import dataclasses

import pyarrow as pa
import pytest

from raycrawl.config import CrawlConfig
from raycrawl.db_worker.politeness import Wait
from raycrawl.db_worker.queue import Entry
from raycrawl.db_worker.robots import RobotsPolicy
from raycrawl.db_worker.shard import DBShard
from raycrawl.errors import ErrorKind
from raycrawl.formats import schemas
from raycrawl.formats.schemas import FetchOutcome, ended
from raycrawl.output.durable import read_pages


@pytest.fixture
def worker(tmp_path):
    w = DBShard(CrawlConfig(out=str(tmp_path), retries=1, host_park_after=2,
                             retry_backoff_s=1.0, delay_s=0.0), 0)
    yield w
    w.close()


def entry(i, host="h.com", attempts=0):
    return Entry(f"http://{host}/{i}", i + 1, host, 0, 0, 1.0, attempts)


def with_outcomes(entries, outcomes):
    """Spider-log rows for entries with (status, error, retry_after) outcomes."""
    return FetchOutcome.to_batch([
        dataclasses.replace(ended(e, ErrorKind.INTERNAL_ERROR), status=status,
                            error=error and ErrorKind(error), retry_after_s=after)
        for e, (status, error, after) in zip(entries, outcomes)])


def test_retryable_outcomes_get_one_more_attempt(worker):
    es = [entry(0), entry(1), entry(2), entry(3, attempts=1)]
    pages, retry = worker.settle(with_outcomes(es, [
        (503, None, 30.0), (None, "timeout", None), (404, None, None), (500, None, None)]), es)
    assert [e.fingerprint for e in retry] == [1, 2]
    assert [e.attempts for e in retry] == [1, 1]
    assert pages.column("fingerprint").to_pylist() == [3, 4]  # 404, and 500 out of attempts
    assert worker.slots.ready_at["h.com"] >= 30.0  # Retry-After pushed the host back
    assert "h.com" not in worker.slots.failures  # it answered: healthy


def test_unreachable_host_parks_and_its_urls_end(worker):
    for _ in range(2):
        es = [entry(0), entry(1)]
        worker.settle(with_outcomes(es, [(None, "connection", None)] * 2), es)
    assert worker.slots.parked == {"h.com": "host-unreachable"}
    triage = worker.triage([entry(5), entry(6, host="ok.com")])
    fetch, ended = triage.fetch, triage.ended
    assert [e.url for e, _ in fetch] == ["http://ok.com/6"]
    assert ended == [(entry(5), "host-unreachable")]


def test_cached_robots_decide_at_the_cut(worker):
    worker.robots.put("http://h.com", RobotsPolicy.from_fetch(
        200, b"User-agent: *\nDisallow: /1\nCrawl-delay: 4", 0.0, 1e12, 1.0))
    triage = worker.triage([entry(0), entry(1), entry(2, host="new.com")])
    fetch, ended = triage.fetch, triage.ended
    assert [(e.url, needed) for e, needed in fetch] == [("http://h.com/0", False),
                                                         ("http://new.com/2", True)]
    assert ended == [(entry(1), "robots")]
    assert worker.slots.delay("h.com") == 4.0


def test_restart_requeues_leases_and_quarantines_poison(tmp_path):
    config = CrawlConfig(out=str(tmp_path), fetch_retries=2, delay_s=0.0)
    first = DBShard(config, 0)
    first.queue.push([entry(0), dataclasses.replace(entry(1, host="g.com"), crashes=2)])
    batch_id, leased = first.queue.cut(10, 5, first.slots, None, 100)
    assert len(leased) == 2
    first.close()  # the worker "dies" with both URLs in flight
    second = DBShard(config, 0)
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


def fetched_rows(entries):
    return FetchOutcome.to_batch([
        dataclasses.replace(ended(e, ErrorKind.INTERNAL_ERROR), status=200, error=None)
        for e in entries])


def test_a_batch_commits_in_one_write_and_nothing_counts_before_it(worker, monkeypatch):
    worker.queue.push([entry(i) for i in range(3)])
    batch_id, leased = worker.cut(10, None)
    assert len(leased) == 3 and worker.queue.queued == 0
    pages, retry = worker.settle(fetched_rows(leased[:2]), leased)
    writes = []

    def failing(wb):
        writes.append(wb)
        raise OSError("disk full")

    monkeypatch.setattr(worker.store, "write", failing)
    with pytest.raises(OSError):
        worker.complete(batch_id, pages, [dataclasses.replace(leased[2], attempts=1)])
    assert len(writes) == 1  # leases, done marks, retries and output rows: one WriteBatch
    assert (worker.queue.done_total, worker.queue.queued, worker.counters.fetched) == (0, 0, 0)
    assert worker.output.pages.writer.buffered == 0
    monkeypatch.undo()
    worker.complete(batch_id, pages, [dataclasses.replace(leased[2], attempts=1)])
    assert (worker.queue.done_total, worker.queue.queued, worker.counters.fetched) == (2, 1, 2)
    assert worker.queue.stale_leases() == []
    worker.complete(batch_id, pages)  # the same batch again: no second row
    assert worker.counters.fetched == 2


def test_a_batch_that_keeps_failing_ends_as_internal_error(worker):
    worker.queue.push([entry(0)])

    def failed_batch():
        batch_id, leased = worker.cut(10, None)
        assert len(leased) == 1
        worker.fail(batch_id, leased)
        worker.release_hosts(e.host for e in leased)
        worker.finish_batch()

    for _ in range(worker.config.fetch_retries):
        failed_batch()
        assert worker.queue.queued == 1  # back for another try
    failed_batch()
    assert worker.queue.queued == 0 and worker.counters.error_kinds == {"internal-error": 1}


def test_a_redirect_is_a_row_of_its_own_and_never_retried(worker):
    es = [entry(0), entry(1)]
    pages, retry = worker.settle(with_outcomes(es, [(301, None, None), (302, None, None)]), es)
    assert retry == [] and pages.column("status").to_pylist() == [301, 302]
    assert "h.com" not in worker.slots.failures  # a host that redirects is up
    worker.queue.push(es)
    batch_id, leased = worker.cut(10, None)
    worker.complete(batch_id, pages)
    assert worker.counters.fetched == 2 and worker.counters.errors == 0


def test_a_host_answering_only_5xx_is_backed_off_but_never_parked(worker):
    for _ in range(3):  # host_park_after is 2
        es = [entry(0), entry(1)]
        worker.settle(with_outcomes(es, [(503, None, None), (500, None, None)]), es)
    assert worker.slots.failures["h.com"] == 3 and "h.com" not in worker.slots.parked
    assert worker.slots.ready_at["h.com"] > 0  # pushed back


@pytest.mark.parametrize("statuses", [(500, 500), (503, 502), (500, 404)])
def test_retried_urls_that_answer_errors_again_do_not_back_their_host_off(worker, statuses):
    """A host's bad pages fail again when retried: their own fault (each waits its own
    backoff), not their host's; a retry that gets no answer still counts against the host,
    as does a first attempt's error."""
    for _ in range(3):
        es = [entry(0, attempts=1), entry(1, attempts=1)]
        worker.settle(with_outcomes(es, [(s, None, None) for s in statuses]), es)
    assert "h.com" not in worker.slots.failures and "h.com" not in worker.slots.ready_at
    es = [entry(0, attempts=1), entry(1)]  # one first attempt among them
    worker.settle(with_outcomes(es, [(500, None, None), (statuses[0], None, None)]), es)
    assert worker.slots.failures["h.com"] == 1 and worker.slots.ready_at["h.com"] > 0
    worker.settle(with_outcomes(es[:1], [(None, "timeout", None)]), es[:1])  # no answer
    assert worker.slots.failures["h.com"] == 2


def test_urls_left_out_after_a_retry_after_go_back_unchanged(worker):
    es = [entry(0), entry(1, attempts=1), entry(2)]
    # the fetch worker stopped the host after the 429: entries 1 and 2 have no row
    pages, retry = worker.settle(with_outcomes(es[:1], [(429, None, 5.0)]), es)
    assert sorted((e.fingerprint, e.attempts) for e in retry) == [(1, 1), (2, 1), (3, 0)]
    assert pages.num_rows == 0 and worker.slots.ready_at["h.com"] >= 5.0


class _NoMetrics:
    def robots(self, outcomes):
        pass


def test_a_batchs_hosts_are_settled_and_released_one_by_one_as_they_end(worker):
    from actors.db_worker import _Fetched
    from raycrawl.fetch.result import FetchResult

    worker.queue.push([entry(0, "a.com"), entry(1, "a.com"), entry(2, "b.com"),
                       entry(3, "c.com")])
    batch_id, leased = worker.cut(10, None)
    held = {e.host for e in leased}
    assert held == {"a.com", "b.com", "c.com"} == worker.slots.leased
    requeued = set()
    fetched = _Fetched(worker, _NoMetrics(), [(e, False) for e in leased], held, batch_id,
                       requeued)
    a = [e for e in leased if e.host == "a.com"]
    fetched.take(["a.com"], FetchResult.empty()._replace(
        pages=with_outcomes(a, [(200, None, None), (503, None, None)])))
    assert worker.slots.leased == held == {"b.com", "c.com"}  # a.com is free: its fetch ended
    # its 503 is queued again now, its lease dropped: it waits for its backoff, not the batch
    assert worker.queue.queued == 1 and requeued == {a[1].fingerprint}
    assert sorted(e.url for e in worker.queue.leased(batch_id)) == [
        "http://a.com/0", "http://b.com/2", "http://c.com/3"]
    # b.com sent a Retry-After first: nothing requested
    fetched.take(["b.com"], FetchResult.empty())
    assert worker.slots.leased == {"c.com"} and worker.queue.queued == 2
    result = fetched.result()
    assert result.pages.column("url").to_pylist() == ["http://a.com/0"]
    b = next(e for e in leased if e.host == "b.com")
    assert requeued == {a[1].fingerprint, b.fingerprint}  # the completion queues none again
    assert worker.queue.leased_total == 2  # a.com/0 (its row not committed yet) and c.com/3
    fetched.take(["c.com"], FetchResult.empty()._replace(pages=pa.RecordBatch.from_pydict(
        {"url": ["broken"]})))  # a part this worker cannot read: kept for check()
    assert worker.slots.leased == {"c.com"}  # not released by the part: the batch's end does
    with pytest.raises(KeyError):
        fetched.check()


def test_urls_given_back_mid_batch_are_queued_once_whatever_ends_the_batch(tmp_path):
    """URLs a host's ended part gives back are queued at once, their leases dropped in the
    same write: the batch's own end (completed, given back by a peer's fault, or the worker
    dead with the batch in flight) queues only the URLs it still holds, never those again."""
    config = CrawlConfig(out=str(tmp_path), delay_s=0.0)
    for end in ("completed", "given back", "worker died"):
        first = DBShard(dataclasses.replace(config, out=str(tmp_path / end)), 0)
        first.queue.push([entry(0), entry(1), entry(2, host="g.com")])
        batch_id, leased = first.cut(10, None)
        assert len(leased) == 3
        first.requeue(batch_id, [dataclasses.replace(leased[1], attempts=1)])
        assert first.queue.queued == 1 and first.queue.leased_total == 2
        left = [e for e in leased if e is not leased[1]]
        if end == "completed":
            first.complete(batch_id, with_outcomes(left, [(200, None, None)] * 2), [], None, left)
        elif end == "given back":
            first.give_back(batch_id, left)
        first.close()
        again = DBShard(dataclasses.replace(config, out=str(tmp_path / end)), 0)
        try:
            assert again.queue.stale_leases() == [] and again.queue.leased_total == 0
            _, cut = again.cut(10, None)
            urls = sorted(e.url for e in cut)
            assert len(urls) == len(set(urls)), (end, urls)  # each URL queued once
            expected = {e.url for e in leased} if end != "completed" else {leased[1].url}
            assert set(urls) == expected, end
            assert [e.attempts for e in cut if e.url == leased[1].url] == [1]
        finally:
            again.close()


def test_a_hosts_rows_in_parts_settle_once_its_fetch_ends(worker):
    """A host's siblings come before its slow page: its health is recorded, and its URLs
    without a row queued again, only at its end; a body cut off by the timeout after the
    status came is final (the server answers, too slowly)."""
    es = [entry(0), entry(1), entry(2)]
    pages, retry = worker.settle(with_outcomes(es[:1], [(None, "timeout", None)]), es[:1], [])
    assert [e.fingerprint for e in retry] == [1] and pages.num_rows == 0
    assert "h.com" not in worker.slots.failures  # not over yet: nothing recorded
    pages, retry = worker.settle(with_outcomes(es[1:2], [(200, "timeout", None)]), es, ["h.com"])
    assert pages.column("fingerprint").to_pylist() == [2]  # the drip: kept, not retried
    assert [e.fingerprint for e in retry] == [3]  # no row: not requested, back as it was
    assert retry[0].attempts == 0
    assert "h.com" not in worker.slots.failures  # one request got an answer: up


class Clock:
    """time.time and time.monotonic of the shard, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_a_robots_txt_that_cannot_be_read_parks_its_host_after_the_bound(worker, monkeypatch):
    """Defaults: tried again 2, 4, 8, 16 s after each failure, until the next try would start
    60 s or more after the first; then the host's URLs end as robots-unavailable."""
    clock = Clock()
    monkeypatch.setattr("raycrawl.db_worker.shard.time", clock)
    rows = {"origin": ["http://h.com"], "host": ["h.com"], "status": [None], "body": [None],
            "error": ["connection"]}
    batch = pa.RecordBatch.from_pydict(rows, schema=schemas.ROBOTS)
    tries = []
    while "h.com" not in worker.slots.parked and len(tries) < 20:
        tries.append(clock.now - 1000.0)
        worker.learn_robots(batch)
        if "h.com" not in worker.slots.parked:
            assert worker.slots.wait_reason("h.com", clock.now) == "robots-retry"
            clock.now = worker.slots.ready_at["h.com"]
    assert tries == [0, 2, 6, 14, 30]
    assert worker.triage([entry(0)]).ended == [(entry(0), "robots-unavailable")]


def test_every_queued_url_has_a_reason_and_they_add_up(worker, monkeypatch):
    clock = Clock()
    monkeypatch.setattr("raycrawl.db_worker.shard.time", clock)
    monkeypatch.setattr("raycrawl.db_worker.queue.time", clock)
    slots = worker.slots
    worker.queue.push([entry(0, "ready.com"), entry(1, "ready.com"), entry(2, "busy.com"),
                       entry(3, "busy.com"), entry(4, "slow.com"), entry(5, "down.com"),
                       entry(6, "gone.com"), entry(7, "robots.com"), entry(8, "busy.com")])
    _, leased = worker.queue.cut(1, 1, slots, None, 100)  # a batch holds ready.com's first
    assert [e.host for e in leased] == ["ready.com"]
    worker.release_hosts(["ready.com"])
    slots.lease({"busy.com"})
    slots.push_back("slow.com", clock.now + 5, Wait.POLITENESS)
    slots.record_outcome("down.com", healthy=False, now=clock.now)
    slots.park("gone.com", ErrorKind.HOST_UNREACHABLE)
    slots.push_back("robots.com", clock.now + 5, Wait.ROBOTS)
    # a retry of ready.com's first URL waits its backoff
    worker.complete(1, FetchOutcome.empty(), [dataclasses.replace(
        leased[0], attempts=1, not_before=clock.now + 4)])
    reasons = worker.reasons(None, fetching=True)
    assert reasons == {"ready": 1, "retry-backoff": 1, "host-busy": 3, "politeness": 1,
                       "host-backoff": 1, "parked": 1, "robots-retry": 1}
    assert sum(reasons.values()) == worker.queue.queued == 9
    clock.now += 10  # every wait passed
    reasons = worker.reasons(0, fetching=False)
    assert reasons == {"host-busy": 3, "parked": 1, "paused": 5}
    reasons = worker.reasons(None, fetching=True, rate_limited=True)  # no token of --max-rate
    assert reasons == {"host-busy": 3, "parked": 1, "max-rate": 5}


def test_a_revisiting_crawl_tries_robots_txt_again_once_its_urls_are_due(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr("raycrawl.db_worker.shard.time", clock)
    shard = DBShard(CrawlConfig(out=str(tmp_path), recrawl_after_s=30.0, robots_retry_s=2.0,
                                robots_give_up_s=5.0, delay_s=0.0), 0)
    try:
        rows = {"origin": ["http://h.com"], "host": ["h.com"], "status": [503],
                "body": [None], "error": [None]}
        batch = pa.RecordBatch.from_pydict(rows, schema=schemas.ROBOTS)
        shard.learn_robots(batch)  # next try 2 s after
        clock.now += 2
        shard.learn_robots(batch)  # the next would be 4 s after: past 5 s, given up
        assert shard.triage([entry(0)]).ended == [(entry(0), "robots-unavailable")]
        clock.now += 29
        assert shard.triage([entry(1)]).ended  # still parked
        clock.now += 2  # the URLs' next visit: robots.txt is read again (a new round)
        triage = shard.triage([entry(2)])
        assert triage.ended == [] and triage.fetch == [(entry(2), True)]
        assert shard.robots.stored("http://h.com").failures == 0
    finally:
        shard.close()
