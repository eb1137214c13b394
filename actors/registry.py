"""The cluster's registry of crawls: fair shares of the CPUs, and ``raycrawl list``.

One detached actor per cluster, named ``crawl-registry`` in namespace ``raycrawl`` (crawl
actors' names all hold a ``/``, so it cannot clash with one), created by the first coordinator
that registers and found by name by the others.  It holds no state worth keeping: restarted,
it is refilled by the coordinators' next registrations (about once a second).  The decisions
are ``raycrawl.coordinator.sharing``'s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources

from raycrawl.coordinator.sharing import CrawlEntry, CrawlTable

from .options import NAMESPACE, REGISTRY_NAME, registry_options

CPUS_READ_EVERY_S = 5.0


class Registry:
    """The table of the cluster's crawls; see the module docstring."""

    def __init__(self) -> None:
        self.table = CrawlTable()
        self.cpus_read_at = -1e9
        # CPUs asked of the autoscaler (0: none; -1: unknown, so a restarted registry states
        # the total once, withdrawing a request its predecessor left)
        self.requested = -1

    async def _request(self) -> None:
        """Ask the autoscaler for the CPUs the crawls want (``CrawlTable.requested``) when
        that changed; 0 withdraws the request.  A cluster without an autoscaler ignores it."""
        wanted = self.table.requested()
        if wanted != self.requested:
            await asyncio.to_thread(request_resources, num_cpus=wanted)
            self.requested = wanted

    async def _read_cpus(self) -> None:
        now = time.monotonic()
        if now - self.cpus_read_at >= CPUS_READ_EVERY_S:
            self.cpus_read_at = now
            # Off the event loop: the call blocks on the GCS.
            resources = await asyncio.to_thread(ray.cluster_resources)
            self.table.set_cpus(int(resources.get("CPU", 0)), now)

    async def register(self, entry: CrawlEntry) -> tuple[CrawlEntry, int, int]:
        """Add or renew a crawl; returns its entry with its share, the cluster's CPUs and the
        number of crawls."""
        await self._read_cpus()
        granted = self.table.register(entry, time.monotonic())
        await self._request()
        return granted, self.table.cpus, len(self.table.entries)

    async def unregister(self, crawl_id: str) -> None:
        self.table.unregister(crawl_id, time.monotonic())
        await self._request()

    async def crawls(self) -> tuple[list[CrawlEntry], int]:
        """The crawls on the cluster (first registered first), and its CPUs."""
        await self._read_cpus()
        crawls = self.table.crawls(time.monotonic())  # (expired ones dropped)
        await self._request()
        return crawls, self.table.cpus

    def autoscaler_request(self) -> int:
        """The CPUs the autoscaler is asked for now (0: none)."""
        return max(0, self.requested)


class RegistryHandle:
    """Calls to the registry, each bounded; the registry is created on first use."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.actor: Any = None

    def _actor(self) -> Any:
        if self.actor is None:
            self.actor = ray.remote(Registry).options(**registry_options()).remote()
        return self.actor

    async def register(self, entry: CrawlEntry) -> tuple[CrawlEntry, int, int]:
        result: tuple[CrawlEntry, int, int] = await asyncio.wait_for(
            self._actor().register.remote(entry), self.timeout_s)
        return result

    async def unregister(self, crawl_id: str) -> None:
        await asyncio.wait_for(self._actor().unregister.remote(crawl_id), self.timeout_s)

    def forget(self) -> None:
        """Look the registry up again on the next call (it may have been replaced)."""
        self.actor = None


def list_crawls(timeout_s: float = 30.0) -> tuple[list[CrawlEntry], int]:
    """From a driver: the crawls on the connected cluster and its CPUs (none if no crawl ever
    registered there)."""
    try:
        actor = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    except ValueError:
        return [], int(ray.cluster_resources().get("CPU", 0))
    ref: Any = actor.crawls.remote()
    crawls, cpus = ray.get(ref, timeout=timeout_s)
    return list(crawls), int(cpus)
