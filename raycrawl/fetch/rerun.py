"""Running a spider feed to completion across fetch-worker faults, without Ray.

The fault model: a fetch worker that dies, is killed or restarts under a batch is an
infrastructure fault until shown otherwise, so the batch runs again — never does a fault turn
a good URL into an error row.  Only a URL that makes its worker fail again and again when it
is fetched alone is poison, and ends as ``fetch-task-failed``:

1. the whole feed is run, and once more if its worker failed (a kill from outside, a lost node);
2. then each host's URLs in a call of their own (hosts at once: they are different hosts);
3. a host whose call failed again has its URLs run one at a time (its politeness holds), each
   up to ``solo_tries`` times.

A call hands over its hosts' rows as each host ends (``sink``, every host once; the rows of a
host still running may come before, without its name); a call that fails is run again for the
URLs it had not handed over, so a host handed over (and released by the DB worker: another
batch may be fetching it) is never fetched again by this one, nor a URL whose row came.  Hosts
run URL by URL are handed over once all their URLs are done.

Before any re-run the caller waits (bounded) for a worker to answer again; a fault on a worker
that was not answering says nothing of the feed and does not count (at most ``max_uncounted``
of those in all, so nothing waits forever).  A worker's call never leaves requests running
behind it (``fetch_hosts`` cancels a batch's hosts before an error leaves), so a re-run never
sends a host two requests at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from raycrawl.errors import ErrorKind
from raycrawl.fetch.result import FetchResult
from raycrawl.formats import schemas


@dataclass(frozen=True, slots=True)
class Fault:
    """A call that failed: the worker died, restarted, was unreachable, or raised."""

    reason: str
    counted: bool  # the worker was answering when the call was made: the feed may be the cause


# sink(hosts, result): these hosts' fetch is over, here are their rows.
Sink = Callable[[list[str], FetchResult], None]
# attempt(feed, rerun, sink) -> None once every host of ``feed`` went to ``sink``, or the fault
# that stopped it; ``rerun`` asks to wait for a worker that answers first.
Attempt = Callable[[pa.RecordBatch, bool, Sink], Awaitable[Fault | None]]


class Rerun:
    """Runs feeds through ``attempt`` under the fault model above; see the module docstring."""

    def __init__(self, attempt: Attempt, solo_tries: int, max_uncounted: int = 10) -> None:
        self.attempt = attempt
        self.solo_tries = max(1, solo_tries)
        self.max_uncounted = max_uncounted
        self.faults = 0  # calls that failed (the DB worker reports them)
        self.poisoned = 0  # URLs ended as fetch-task-failed

    async def run(self, feed: pa.RecordBatch, sink: Sink) -> None:
        """Every request of ``feed`` fetched (or, poison, ended), its host's rows handed to
        ``sink`` once per host: one page row per request, except after a Retry-After."""
        fault, left = await self._call(feed, False, sink)
        if fault is None:
            return
        self.faults += 1
        uncounted = [0]
        left = await self._tries(left, 1, uncounted, sink)
        if left.num_rows == 0:
            return
        hosts = pc.unique(left.column("host")).to_pylist()
        await asyncio.gather(*(
            self._one_host(left.filter(pc.equal(left.column("host"), host)), uncounted, sink)
            for host in hosts))

    async def _call(self, feed: pa.RecordBatch, rerun: bool, sink: Sink
                    ) -> tuple[Fault | None, pa.RecordBatch]:
        """One attempt; (its fault or None, the rows of the hosts it did not hand over)."""
        done: set[str] = set()
        rows: list[pa.Array] = []  # fingerprints of the rows handed over

        def take(hosts: list[str], result: FetchResult) -> None:
            done.update(hosts)
            rows.append(result.pages.column("fingerprint"))
            sink(hosts, result)

        fault = await self.attempt(feed, rerun, take)
        if fault is None:
            return None, feed.slice(0, 0)
        if done:
            feed = feed.filter(pc.invert(pc.is_in(feed.column("host"),
                                                  value_set=pa.array(list(done)))))
        if rows:
            fps = pa.concat_arrays([r.cast(pa.uint64()) for r in rows])
            feed = feed.filter(pc.invert(pc.is_in(feed.column("fingerprint"), value_set=fps)))
        return fault, feed

    async def _one_host(self, feed: pa.RecordBatch, uncounted: list[int], sink: Sink) -> None:
        if feed.num_rows > 1:
            feed = await self._tries(feed, 1, uncounted, sink)
            if feed.num_rows == 0:
                return
        parts: list[FetchResult] = []
        for i in range(feed.num_rows):  # one at a time: the host's politeness still holds
            row = feed.slice(i, 1)
            left = await self._tries(row, self.solo_tries, uncounted,
                                     lambda _, result: parts.append(result))
            if left.num_rows:
                parts.append(self._poison(row))
        sink([feed.column("host")[0].as_py()], FetchResult.concat(parts))

    async def _tries(self, feed: pa.RecordBatch, tries: int, uncounted: list[int],
                     sink: Sink) -> pa.RecordBatch:
        """Up to ``tries`` counted re-runs of ``feed``; returns the rows still not fetched."""
        failed = 0
        while failed < tries and feed.num_rows:
            fault, feed = await self._call(feed, True, sink)
            if fault is None:
                break
            self.faults += 1
            if fault.counted or uncounted[0] >= self.max_uncounted:
                failed += 1
            else:
                uncounted[0] += 1
        return feed

    def _poison(self, row: pa.RecordBatch) -> FetchResult:
        self.poisoned += 1
        pages = schemas.ended_rows((r, ErrorKind.FETCH_TASK_FAILED)
                                   for r in schemas.FetchRequest.from_batch(row))
        return FetchResult.empty()._replace(pages=pages)
