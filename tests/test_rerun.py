"""The fetch fault model without Ray: a worker fault re-fetches; only a URL that kills its
worker when fetched alone, again and again, is poison."""

import asyncio
import dataclasses

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)

from raycrawl.db_worker.queue import Entry
from raycrawl.errors import ErrorKind
from raycrawl.fetch.rerun import Fault, Rerun
from raycrawl.fetch.result import FetchResult
from raycrawl.formats import schemas


def feed(urls_by_host):
    entries = [Entry(f"http://{h}/{i}", n, h, 0, 1, 1.0, 0)
               for n, (h, i) in enumerate((h, i) for h, k in urls_by_host.items()
                                          for i in range(k))]
    return schemas.feed_rows(entries, [0.0] * len(entries), [False] * len(entries))


def fetched(feed_rows: pa.RecordBatch) -> FetchResult:
    """Every request answered 200."""
    return FetchResult.empty()._replace(pages=schemas.FetchOutcome.to_batch([
        dataclasses.replace(schemas.ended(r, ErrorKind.INTERNAL_ERROR), status=200, error=None)
        for r in schemas.FetchRequest.from_batch(feed_rows)]))


class Worker:
    """A fake fetch worker: hands over each host's rows in turn; dies whenever a poison URL is
    in the feed, for the first ``killed`` calls (killed from outside, or restarting: not
    answering), and, the first time, after handing over ``dies_after`` hosts."""

    def __init__(self, poison=(), killed=0, answering=True, dies_after=None):
        self.poison, self.killed, self.answering = set(poison), killed, answering
        self.dies_after = dies_after
        self.calls: list[list[str]] = []
        self.in_flight: dict[str, int] = {}
        self.max_per_host = 0

    async def attempt(self, feed_rows, rerun, sink):
        urls = feed_rows.column("url").to_pylist()
        hosts = list(dict.fromkeys(feed_rows.column("host").to_pylist()))
        self.calls.append(urls)
        for h in hosts:
            self.in_flight[h] = self.in_flight.get(h, 0) + 1
            self.max_per_host = max(self.max_per_host, self.in_flight[h])
        await asyncio.sleep(0.001)
        pending = set(hosts)
        try:
            if self.killed:
                self.killed -= 1
                return Fault("killed", counted=self.answering)
            if self.poison & set(urls):
                return Fault("died", counted=True)
            for n, h in enumerate(hosts):
                if n == self.dies_after:
                    self.dies_after = None
                    return Fault("killed mid-batch", counted=True)
                pending.discard(h)
                self.in_flight[h] -= 1
                sink([h], fetched(feed_rows.filter(pa.compute.equal(feed_rows.column("host"),
                                                                    h))))
            return None
        finally:
            for h in pending:
                self.in_flight[h] -= 1


def run(worker, f, solo_tries=3):
    rerun = Rerun(worker.attempt, solo_tries)
    parts = []
    asyncio.run(rerun.run(f, lambda hosts, result: parts.append((hosts, result))))
    hosts = [h for hs, _ in parts for h in hs]
    assert len(hosts) == len(set(hosts))  # every host handed over once
    assert set(hosts) == set(f.column("host").to_pylist())
    return rerun, FetchResult.concat([r for _, r in parts])


def test_a_killed_worker_re_fetches_the_whole_batch_and_nothing_becomes_an_error():
    w = Worker(killed=1)
    f = feed({"a.com": 3, "b.com": 2})
    rerun, result = run(w, f)
    assert result.pages.num_rows == 5
    assert result.pages.column("error").null_count == 5  # no error rows
    assert len(w.calls) == 2 and rerun.poisoned == 0 and rerun.faults == 1


def test_hosts_handed_over_before_a_fault_are_not_fetched_again():
    w = Worker(dies_after=2)
    f = feed({"a.com": 2, "b.com": 2, "c.com": 1, "d.com": 2})
    rerun, result = run(w, f)
    assert result.pages.num_rows == 7 and result.pages.column("error").null_count == 7
    assert rerun.faults == 1 and len(w.calls) == 2
    assert sorted(w.calls[1]) == ["http://c.com/0", "http://d.com/0", "http://d.com/1"]


def test_faults_while_the_worker_restarts_do_not_count_against_urls():
    # The worker is not answering for many calls in a row (restarting): a single URL is not
    # turned into poison by them, however many there are (up to the bound).
    w = Worker(killed=8, answering=False)
    rerun, result = run(w, feed({"a.com": 1}))
    assert result.pages.column("error").to_pylist() == [None]
    assert rerun.poisoned == 0


def test_poison_ends_alone_and_its_hosts_neighbours_are_fetched():
    f = feed({"a.com": 3, "b.com": 2})
    bad = "http://a.com/1"
    w = Worker(poison={bad})
    rerun, result = run(w, f)
    rows = dict(zip(result.pages.column("url").to_pylist(),
                    result.pages.column("error").to_pylist()))
    assert rows == {"http://a.com/0": None, bad: "fetch-task-failed", "http://a.com/2": None,
                    "http://b.com/0": None, "http://b.com/1": None}
    assert rerun.poisoned == 1
    assert sum(c == [bad] for c in w.calls) == 3  # alone, solo_tries times
    assert w.max_per_host == 1  # a host is never fetched by two calls at once


def test_poison_in_two_hosts_and_a_feed_of_one_host():
    f = feed({"a.com": 2, "b.com": 2, "c.com": 1})
    w = Worker(poison={"http://a.com/0", "http://b.com/1"})
    rerun, result = run(w, f, solo_tries=2)
    errors = sorted(e for e in result.pages.column("error").to_pylist() if e)
    assert errors == ["fetch-task-failed"] * 2 and result.pages.num_rows == 5
    w = Worker(poison={"http://a.com/0"})
    _, result = run(w, feed({"a.com": 3}))
    assert result.pages.column("error").to_pylist().count("fetch-task-failed") == 1
    assert result.pages.num_rows == 3


def test_urls_handed_over_before_their_host_ended_are_not_fetched_again():
    """A slow page's siblings come out early (a part naming no host); the call then dies:
    the re-run fetches the rest of that host only, and names it once, at its end."""
    f = feed({"a.com": 3, "b.com": 1})
    calls: list[list[str]] = []

    async def attempt(feed_rows, rerun, sink):
        calls.append(feed_rows.column("url").to_pylist())
        if len(calls) == 1:
            sink([], fetched(feed_rows.slice(0, 2)))  # a.com/0 and /1 ended, a.com runs on
            return Fault("killed mid-host", counted=True)
        sink(list(dict.fromkeys(feed_rows.column("host").to_pylist())), fetched(feed_rows))
        return None

    parts = []
    asyncio.run(Rerun(attempt, 3).run(f, lambda hosts, result: parts.append((hosts, result))))
    assert calls[1] == ["http://a.com/2", "http://b.com/0"]
    urls = [u for _, r in parts for u in r.pages.column("url").to_pylist()]
    assert sorted(urls) == sorted(f.column("url").to_pylist())  # each URL's row once
    assert [h for hs, _ in parts for h in hs] == ["a.com", "b.com"]


def test_a_guest_batch_refused_by_its_lenders_goes_to_the_next_then_to_its_own_worker():
    """A lender that stopped lending (paused, draining, no quota) refuses before fetching:
    the batch is asked of the next lender in turn, and with every one refusing it runs on a
    fetch worker of the pool's own; a refusal is no fault of the feed's."""
    from types import SimpleNamespace

    from actors.fetch import FetchPool, NotLending

    pool = FetchPool(SimpleNamespace(warc_dir=None), "crawl/db-worker-1", solo_tries=2)
    asked: list[str] = []
    own: list[pa.RecordBatch] = []

    async def on_lender(lender, batch, rerun, sink):
        asked.append(lender)
        return NotLending(f"{lender} lends nothing") if lender in refusing else None

    async def own_attempt(batch, rerun, sink):
        own.append(batch)

    pool._on_lender, pool._own_attempt = on_lender, own_attempt
    pool.lend_from(["db-worker-0", "db-worker-2"])
    batch = feed({"a": 2})
    refusing = {"db-worker-0"}
    assert asyncio.run(pool.run(batch, lambda hosts, result: None)) is None
    assert asked == ["db-worker-0", "db-worker-2"] and not own
    assert (pool.lent, pool.refused, pool.faults) == (1, 1, 0)
    refusing = {"db-worker-0", "db-worker-2"}
    asked.clear()
    asyncio.run(pool.run(batch, lambda hosts, result: None))
    assert sorted(asked) == ["db-worker-0", "db-worker-2"] and own == [batch]
    assert (pool.lent, pool.refused, pool.faults) == (1, 3, 0)


def test_a_pool_takes_a_retiring_worker_back_before_starting_another(monkeypatch):
    """A share that shrinks and grows again while the surplus worker still runs its batch: the
    pool takes that worker back instead of starting one more (it would hold a CPU beyond the
    share until the retiring one ended; CI saw 4 fetch workers for a share of 3)."""
    from types import SimpleNamespace

    import actors.fetch as fetch

    started: list[str] = []

    class Remote:
        def options(self, name, **_):
            return SimpleNamespace(remote=lambda *_: started.append(name) or name)

    monkeypatch.setattr(fetch, "_REMOTE_FETCH_WORKER", Remote())
    pool = fetch.FetchPool(SimpleNamespace(warc_dir=None), "crawl/db-worker-0", solo_tries=2)
    pool.resize(3)
    for worker in pool.workers:
        worker.load = 1  # each runs a batch: a retiring one is not ended yet
    pool.resize(2)
    assert (len(pool.workers), len(pool.retiring), pool.size) == (2, 1, 3)
    pool.resize(3)
    assert (len(pool.workers), len(pool.retiring), pool.size, len(started)) == (3, 0, 3, 3)
    pool.resize(4)
    assert pool.size == 4 and len(started) == 4
