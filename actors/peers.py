"""Finding the other actors of a crawl by name, and who owns which partition.

Workers never hold handles passed at creation: they look peers up by their stable names (and
derive the partition owners from the config), so an actor restarted by Ray — whose
``__init__`` runs again with nothing else — finds everything it needs by itself, and a
handle stays valid across the restart of the actor it points to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from raycrawl.config import CrawlConfig
from raycrawl.frontier.control import assign_partitions, owner_table

from .options import NAMESPACE, coordinator_name, db_worker_name, strategy_worker_name


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

    def strategy_worker(self, index: int) -> Any:
        return self._get(strategy_worker_name(self.config.crawl_id, index))

    def db_worker(self, index: int) -> Any:
        return self._get(db_worker_name(self.config.crawl_id, index))

    def coordinator(self) -> Any:
        return self._get(coordinator_name(self.config.crawl_id))
