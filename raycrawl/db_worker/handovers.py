"""Hand-overs grouped: spider-log rows handed over while one hand-over is under way wait, and go
together in the next (a group commit), without Ray.

A hand-over has a fixed cost on both sides whatever its size: a Ray call to each strategy
worker that owns rows, the rows pickled and read back, the strategy worker's reads and its one
write of states, its call to queue the links in the DB workers.  The batches in flight hand
over as they end, and a strategy worker takes one call at a time; grouped, the calls are
fewer and larger (a small-page crawl of 20,800 URLs: 153 calls for 267 hand-overs, about 78
pages each before; benchmarks/README.md, stop 38).  Each caller still returns only once its
own rows were handed over (or with the error of the hand-over that carried them), so a batch
completes after its links are queued, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pyarrow as pa

Send = Callable[[pa.RecordBatch, pa.RecordBatch], Awaitable[None]]


class GroupedHandOvers:
    """``await hand_over(pages, links)``: at most one ``send`` under way; rows that come
    meanwhile go in one ``send`` after it."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.waiting: list[tuple[pa.RecordBatch, pa.RecordBatch, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None
        self.sends = 0  # calls of ``send`` made
        self.calls = 0  # hand-overs asked for

    async def hand_over(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        """Returns once these rows were handed over; raises the error of the ``send`` that
        carried them."""
        self.calls += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((pages, links, done))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        await done

    async def _run(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting, []
            group = [g for g in group if not g[2].done()]  # (its caller was cancelled)
            if not group:
                continue
            try:
                self.sends += 1
                await self.send(pa.concat_batches([p for p, _, _ in group]),
                                pa.concat_batches([k for _, k, _ in group]))
            except asyncio.CancelledError:  # (the worker is ending): its callers too
                for _, _, done in [*group, *self.waiting]:
                    done.cancel()
                raise
            except Exception as exc:
                for _, _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, _, done in group:
                if not done.done():
                    done.set_result(None)
