"""The strategy worker actor: URL states of its partitions, the strategy, the scoring log."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import ray

from raycrawl import faultpoints
from raycrawl.config import CrawlConfig
from raycrawl.coordinator.reports import StrategyWorkerReport
from raycrawl.errors import StorageError
from raycrawl.routing import not_owned
from raycrawl.storage.assignment import NotOwner, Role, ranges
from raycrawl.storage.checkpoints import StoreCheckpoints
from raycrawl.storage.identity import claim_store, prepare_store, store_path
from raycrawl.storage.moves import PartitionCopy
from raycrawl.storage.store import Store
from raycrawl.strategy_worker.runner import STRATEGY_TABLES, StrategyRunner

from .logs import tag_logs
from .options import strategy_worker_name
from .peers import Peers


class StrategyWorker:
    """Owns the URL states of a set of partitions and runs the crawling strategy on them.

    Commit order of every call: decide in memory, queue the scheduled URLs in the DB workers
    (durable there, idempotent by fingerprint), and only then write the state changes (pages
    crawled, links queued) in one atomic batch.  A crash anywhere leaves the state as it was
    before the call, so the caller's retry redoes it; a call returns only once the work it
    handed over is durable, so nothing is ever "in transit" between workers.  Calls are
    serialised: each sees the states the previous one committed.
    """

    def __init__(self, config: CrawlConfig, index: int) -> None:
        tag_logs(config.crawl_id, f"strategy-worker-{index}")
        self.config = config
        self.index = index
        self.name = strategy_worker_name(config.crawl_id, index)
        self.node = node = ray.util.get_node_ip_address()
        store = f"strategy-worker-{index}"
        rollback = prepare_store(config.state_dir, config.out, bool(config.checkpoint_every_s),
                                 store, self.name, node)
        self.store = Store(store_path(config.state_dir, store), sync=config.sync_writes,
                           tables=STRATEGY_TABLES)
        self.lineage = claim_store(self.store, config.out, config.crawl_id, store,
                                   self.name, node, rollback).lineage
        self.checkpoints = StoreCheckpoints(self.store, config.out, config.state_dir, store)
        self.runner = StrategyRunner(config, self.store)
        self.peers = Peers(config)
        self.lock = asyncio.Lock()
        self.storage_error = ""

    async def add_seeds(self, seeds: pa.RecordBatch) -> int:
        async with self.lock:
            self._check_owned(seeds)
            return await self._commit(self.runner.add_seeds(seeds))

    async def process_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> int:
        async with self.lock:
            self._check_owned(pages, links)
            return await self._commit(self.runner.process_spider_log(pages, links))

    def _check_owned(self, *batches: pa.RecordBatch) -> None:
        """Refuse rows of partitions this worker does not own, or that move away
        (:class:`NotOwner`); before it does, it reads the assignment again."""
        foreign = not_owned(batches, self._accepting())
        if foreign:
            self.peers.reload()
            foreign = not_owned(batches, self._accepting())
        if foreign:
            raise NotOwner(self.name, foreign, self.peers.assignment.epoch)

    def _accepting(self) -> frozenset[int]:
        return self.peers.assignment.owned(Role.STRATEGY, self.index) - self.runner.fenced

    # -- a partition's move (see raycrawl.coordinator.rescale) ------------------------------

    async def fence(self, partitions: list[int]) -> int:
        """Take no more rows of ``partitions`` (nothing of them is ever in flight here)."""
        async with self.lock:
            self.runner.fence(partitions)
            return 0

    async def export_partitions(self, partitions: list[int]) -> list[PartitionCopy]:
        async with self.lock:
            copies = [self.runner.export_partition(p) for p in partitions]
            self._fault_point("strategy-worker.exported")
            return copies

    async def adopt_partitions(self, copies: list[PartitionCopy]) -> None:
        async with self.lock:
            for copy in copies:
                self.runner.adopt_partition(copy)
            self._fault_point("strategy-worker.adopted")

    # -- the crawl's checkpoint (see raycrawl.storage.checkpoints) ---------------------------

    async def checkpoint(self, epoch: int) -> None:
        async with self.lock:  # (between two calls: their changes are whole in the store)
            self.checkpoints.create(epoch)

    async def upload_checkpoint(self, epoch: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.checkpoints.upload, epoch, self.lineage)

    async def sync(self) -> None:
        async with self.lock:
            self.peers.reload()

    async def drop_partitions(self, partitions: list[int]) -> None:
        async with self.lock:
            for p in partitions:
                self.runner.drop_partition(p)
            self.peers.reload()
            self._fault_point("strategy-worker.dropped")

    async def _commit(self, scoring: pa.RecordBatch) -> int:
        self._fault_point("strategy-worker.decided")
        try:
            await self.peers.route(Role.DB, (scoring,), lambda w, parts: (
                self.peers.db_worker(w).enqueue(parts[0])))
        except BaseException:
            self.runner.discard()
            raise
        self._fault_point("strategy-worker.routed")
        try:
            self.runner.commit()
        except StorageError as exc:  # the states stay as they were: the caller retries
            self.storage_error = self.storage_error or str(exc)
            self.runner.discard()
            raise
        return scoring.num_rows

    def report(self) -> StrategyWorkerReport:
        owned = self.peers.assignment.owned(Role.STRATEGY, self.index)
        return self.runner.report().replace(node=self.node, storage_error=self.storage_error,
                                            partitions=ranges(owned),
                                            partitions_owned=len(owned))

    def _fault_point(self, point: str) -> None:
        faultpoints.reach(point, self.config.state_dir)

    def close(self) -> None:
        self.store.close()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(StrategyWorker)
