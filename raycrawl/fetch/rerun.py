"""Running a spider feed to completion across fetch-worker faults, without Ray.

The fault model: a fetch worker that dies, is killed or restarts under a batch is an
infrastructure fault until shown otherwise, so the batch runs again — never does a fault turn
a good URL into an error row.  Only a URL that makes its worker fail again and again when it
is fetched alone is poison, and ends as ``fetch-task-failed``:

1. the whole feed is run, and once more if its worker failed (a kill from outside, a lost node);
2. then each host's URLs in a call of their own (hosts at once: they are different hosts);
3. a host whose call failed again has its URLs run one at a time (its politeness holds), each
   up to ``solo_tries`` times.

Before any re-run the caller waits (bounded) for a worker to answer again; a fault on a worker
that was not answering says nothing of the feed and does not count (at most ``max_uncounted``
of those in all, so nothing waits forever).  A worker's call never leaves requests running
behind it (``fetch_feed`` cancels a batch's hosts before an error leaves), so a re-run never
sends a host two requests at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from raycrawl.errors import ErrorKind
from raycrawl.fetch.batch import FetchResult
from raycrawl.formats import schemas


@dataclass(frozen=True, slots=True)
class Fault:
    """A call that failed: the worker died, restarted, was unreachable, or raised."""

    reason: str
    counted: bool  # the worker was answering when the call was made: the feed may be the cause


# attempt(feed, rerun) -> result or fault; ``rerun`` asks to wait for a worker that answers first.
Attempt = Callable[[pa.RecordBatch, bool], Awaitable[FetchResult | Fault]]


class Rerun:
    """Runs feeds through ``attempt`` under the fault model above; see the module docstring."""

    def __init__(self, attempt: Attempt, solo_tries: int, max_uncounted: int = 10) -> None:
        self.attempt = attempt
        self.solo_tries = max(1, solo_tries)
        self.max_uncounted = max_uncounted
        self.faults = 0  # calls that failed (the DB worker reports them)
        self.poisoned = 0  # URLs ended as fetch-task-failed

    async def run(self, feed: pa.RecordBatch) -> FetchResult:
        """Every request of ``feed`` fetched (or, poison, ended): one page row each."""
        first = await self.attempt(feed, False)
        if isinstance(first, FetchResult):
            return first
        self.faults += 1
        uncounted = [0]
        result = await self._tries(feed, 1, uncounted)
        if result is not None:
            return result
        hosts = pc.unique(feed.column("host")).to_pylist()
        if len(hosts) == 1:
            return await self._one_host(feed, uncounted)
        parts = await asyncio.gather(*(
            self._one_host(feed.filter(pc.equal(feed.column("host"), host)), uncounted)
            for host in hosts))
        return FetchResult.concat(list(parts))

    async def _one_host(self, feed: pa.RecordBatch, uncounted: list[int]) -> FetchResult:
        if feed.num_rows > 1:
            result = await self._tries(feed, 1, uncounted)
            if result is not None:
                return result
        parts = []
        for i in range(feed.num_rows):  # one at a time: the host's politeness still holds
            row = feed.slice(i, 1)
            result = await self._tries(row, self.solo_tries, uncounted)
            parts.append(result if result is not None else self._poison(row))
        return FetchResult.concat(parts)

    async def _tries(self, feed: pa.RecordBatch, tries: int,
                     uncounted: list[int]) -> FetchResult | None:
        """Up to ``tries`` counted re-runs of ``feed``; None if every one failed."""
        failed = 0
        while failed < tries:
            result = await self.attempt(feed, True)
            if isinstance(result, FetchResult):
                return result
            self.faults += 1
            if result.counted or uncounted[0] >= self.max_uncounted:
                failed += 1
            else:
                uncounted[0] += 1
        return None

    def _poison(self, row: pa.RecordBatch) -> FetchResult:
        self.poisoned += 1
        columns = row.select(list(schemas.CARRIED)).to_pydict()
        pages = schemas.ended_rows(columns, [ErrorKind.FETCH_TASK_FAILED])
        return FetchResult.empty()._replace(pages=pages)
