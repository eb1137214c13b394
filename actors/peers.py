"""Typed handles to a crawl's actors, found by name, and who owns which partition.

Every Ray call one actor makes on another goes through a handle here, with the types of the
control plane (``raycrawl.frontier.reports``) in and out, so the actors' own code holds no
``.remote``.  Workers never hold handles passed at creation: they look peers up by their stable
names (and derive the partition owners from the config), so an actor restarted by Ray — whose
``__init__`` runs again with nothing else — finds everything it needs by itself, and a handle
stays valid across the restart of the actor it points to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from raycrawl.config import CrawlConfig
from raycrawl.frontier.control import assign_partitions, owner_table
from raycrawl.frontier.reports import DBWorkerReport, SeedReply, StrategyWorkerReport

from .options import NAMESPACE, coordinator_name, db_worker_name, strategy_worker_name


class _Handle:
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def ready(self) -> None:
        await self.actor.__ray_ready__.remote()

    async def close(self) -> None:
        """Close the actor's stores (it stays alive until killed)."""
        await self.actor.close.remote()

    def kill(self) -> None:
        ray.kill(self.actor)


class StrategyWorkerHandle(_Handle):
    async def add_seeds(self, seeds: pa.RecordBatch) -> int:
        return int(await self.actor.add_seeds.remote(seeds))

    async def process_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> int:
        """Returns once the links it scheduled are queued in the DB workers."""
        return int(await self.actor.process_spider_log.remote(pages, links))

    async def report(self) -> StrategyWorkerReport:
        report: StrategyWorkerReport = await self.actor.report.remote()
        return report


class DBWorkerHandle(_Handle):
    async def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Durable in the DB worker when this returns; idempotent."""
        return int(await self.actor.enqueue.remote(scoring))

    async def start(self, gate: int | None) -> None:
        await self.actor.start.remote(gate)

    async def set_gate(self, gate: int | None) -> None:
        await self.actor.set_gate.remote(gate)

    async def drain(self) -> None:
        await self.actor.drain.remote()

    async def report(self) -> DBWorkerReport:
        report: DBWorkerReport = await self.actor.report.remote()
        return report


class CoordinatorClient(_Handle):
    """The coordinator as its workers call it."""

    async def acquire_budget(self, want: int) -> int:
        return int(await self.actor.acquire_budget.remote(want))

    async def release_budget(self, unused: int) -> None:
        await self.actor.release_budget.remote(unused)

    def heartbeat(self) -> None:
        """Fire and forget: a restarted coordinator resumes its loop on the first call."""
        self.actor.heartbeat.remote()

    async def add_seeds(self, urls: list[str]) -> SeedReply:
        reply: SeedReply = await self.actor.add_seeds.remote(urls)
        return reply


class Peers:
    """Handles to a crawl's actors, looked up on first use and cached."""

    def __init__(self, config: CrawlConfig) -> None:
        self.config = config
        self.sw_owner = np.asarray(owner_table(
            assign_partitions(config.partitions, config.strategy_workers)), dtype=np.int64)
        self.db_owner = np.asarray(owner_table(
            assign_partitions(config.partitions, config.db_workers)), dtype=np.int64)
        self._handles: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = ray.get_actor(name, namespace=NAMESPACE)
        return handle

    def strategy_worker(self, index: int) -> StrategyWorkerHandle:
        return StrategyWorkerHandle(self._get(strategy_worker_name(self.config.crawl_id, index)))

    def db_worker(self, index: int) -> DBWorkerHandle:
        return DBWorkerHandle(self._get(db_worker_name(self.config.crawl_id, index)))

    def coordinator(self) -> CoordinatorClient:
        return CoordinatorClient(self._get(coordinator_name(self.config.crawl_id)))

    def strategy_workers(self) -> list[StrategyWorkerHandle]:
        return [self.strategy_worker(i) for i in range(self.config.strategy_workers)]

    def db_workers(self) -> list[DBWorkerHandle]:
        return [self.db_worker(i) for i in range(self.config.db_workers)]
