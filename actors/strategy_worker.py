"""The strategy worker actor: URL states of its partitions, the strategy, the scoring log."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from raycrawl.config import CrawlConfig
from raycrawl.routing import split_by_owner
from raycrawl.storage import Store
from raycrawl.strategy_runner import StrategyRunner


class StrategyWorker:
    """Owns the URL states of a set of partitions and runs the crawling strategy on them.

    Every call returns only after the scoring log it produced is queued (durably) by the DB
    workers, so a caller that awaits it knows the work it handed over is not in transit.
    """

    def __init__(self, config: CrawlConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.store = Store(os.path.join(config.state_dir, f"strategy-worker-{index}"))
        self.runner = StrategyRunner(config, self.store)
        self.db_workers: list[Any] = []
        self.db_owner = np.zeros(0, dtype=np.int64)

    def configure(self, db_workers: list[Any], db_owner: list[int]) -> None:
        self.db_workers = db_workers
        self.db_owner = np.asarray(db_owner, dtype=np.int64)

    async def add_seeds(self, seeds: pa.RecordBatch) -> int:
        return await self._route(self.runner.add_seeds(seeds))

    async def process_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> int:
        return await self._route(self.runner.process_spider_log(pages, links))

    async def _route(self, scoring: pa.RecordBatch) -> int:
        parts = split_by_owner(scoring, self.db_owner)
        await asyncio.gather(*(self.db_workers[w].enqueue.remote(part)
                               for w, part in parts.items()))
        return scoring.num_rows

    def stats(self) -> dict[str, Any]:
        return {"strategy_finished": self.runner.strategy.finished(), **self.runner.counters}

    def close(self) -> None:
        self.store.close()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(StrategyWorker)
