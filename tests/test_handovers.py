"""Grouped hand-overs (``raycrawl.db_worker.handovers``), without Ray."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from raycrawl.db_worker.handovers import GroupedHandOvers


def rows(*urls: str) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    pages = pa.record_batch({"url": pa.array(list(urls), pa.string())})
    links = pa.record_batch({"link": pa.array([f"{u}/a" for u in urls], pa.string())})
    return pages, links


class Strategy:
    """A stand-in for the strategy workers: each send waits for ``release``; it fails for a
    batch that holds a URL in ``fail``."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.sent: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def send(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        urls = pages.column("url").to_pylist()
        assert links.column("link").to_pylist() == [f"{u}/a" for u in urls]
        self.sent.append(urls)
        await self.release.wait()
        if self.fail & set(urls):
            raise RuntimeError(f"refused {sorted(self.fail & set(urls))}")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_rows_that_come_while_one_is_under_way_go_together_each_caller_after_its_own():
    async def main() -> None:
        strategy = Strategy()
        grouped = GroupedHandOvers(strategy.send)
        first = asyncio.ensure_future(grouped.hand_over(*rows("a")))
        await settle()
        later = [asyncio.ensure_future(grouped.hand_over(*rows(u, u + "2"))) for u in "bc"]
        await settle()
        assert strategy.sent == [["a"]] and not first.done()  # the others wait for it
        strategy.release.set()
        await asyncio.gather(first, *later)
        assert strategy.sent == [["a"], ["b", "b2", "c", "c2"]]
        assert (grouped.calls, grouped.sends) == (3, 2)
        await grouped.hand_over(*rows("d"))  # nothing under way: at once, alone
        assert strategy.sent[-1] == ["d"]

    asyncio.run(main())


def test_an_error_reaches_the_callers_whose_rows_it_carried_and_no_other():
    async def main() -> None:
        strategy = Strategy(fail=frozenset({"b"}))
        grouped = GroupedHandOvers(strategy.send)
        first = asyncio.ensure_future(grouped.hand_over(*rows("a")))
        await settle()
        failed = [asyncio.ensure_future(grouped.hand_over(*rows(u))) for u in "bc"]
        await settle()
        strategy.release.set()
        await first
        for call in failed:  # "c" went with "b": it is handed over again by its batch
            with pytest.raises(RuntimeError, match="refused"):
                await call
        await grouped.hand_over(*rows("e"))  # the next group goes on
        assert strategy.sent == [["a"], ["b", "c"], ["e"]]

    asyncio.run(main())


def test_a_cancelled_caller_is_left_out_of_the_next_group():
    async def main() -> None:
        strategy = Strategy()
        grouped = GroupedHandOvers(strategy.send)
        first = asyncio.ensure_future(grouped.hand_over(*rows("a")))
        await settle()
        gone = asyncio.ensure_future(grouped.hand_over(*rows("b")))
        kept = asyncio.ensure_future(grouped.hand_over(*rows("c")))
        await settle()
        gone.cancel()
        strategy.release.set()
        await asyncio.gather(first, kept)
        assert strategy.sent == [["a"], ["c"]]

    asyncio.run(main())
