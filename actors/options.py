"""Names, namespace and Ray options of every actor and task, in one place."""

from __future__ import annotations

from typing import Any

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAMESPACE = "raycrawl"
MAX_RESTARTS = 20  # a worker that dies is restarted by Ray (and reopens its RocksDB)
MAX_TASK_RETRIES = 3  # calls to a restarting actor are retried: they are idempotent


def coordinator_name(crawl_id: str) -> str:
    return f"{crawl_id}/coordinator"


def strategy_worker_name(crawl_id: str, index: int) -> str:
    return f"{crawl_id}/strategy-worker-{index}"


def db_worker_name(crawl_id: str, index: int) -> str:
    return f"{crawl_id}/db-worker-{index}"


def actor_options(name: str, worker: bool = False, node: str | None = None) -> dict[str, Any]:
    """Options of a crawl's actors.

    Every actor is detached, so none dies with the process that created it (the driver, or a
    coordinator being restarted); the coordinator ends them when the crawl is collected or
    abandoned.  They reserve no CPU (they mostly wait on I/O and each other): the CPUs go to
    fetch workers.  ``worker`` actors are found again by name after a restart; the coordinator is
    restarted too, and calls to any of them are retried across restarts.  With ``node`` (a
    node id) the actor runs on that node only, and is restarted there: a DB or strategy worker
    on the node of its store (``raycrawl.coordinator.placement``), the coordinator on the node
    of the crawl's state folder.
    """
    options: dict[str, Any] = {
        "name": name, "namespace": NAMESPACE, "num_cpus": 0, "lifetime": "detached",
        "max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES,
        "max_concurrency": 1000, "get_if_exists": worker}
    if node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    return options


FETCHER_CPUS = 1  # a fetch worker's CPU (its batches' parsing is what the CPUs are for)


def fetcher_options(name: str) -> dict[str, Any]:
    """Options of a fetch worker: owned by its DB worker (it dies with it, so a crawl whose
    workers are gone leaves none behind), restarted when it dies; its calls are not retried,
    because the DB worker re-runs a failed batch itself (isolating a poison URL)."""
    return {"name": name, "namespace": NAMESPACE, "num_cpus": FETCHER_CPUS,
            "max_restarts": -1, "max_task_retries": 0,
            "max_concurrency": 8}


def browser_options(name: str, memory_mb: int, concurrency: int) -> dict[str, Any]:
    """Options of a fetch worker's browser: owned by it, no CPU (its fetch worker's covers
    the pages it renders for it), ``memory_mb`` reserved, restarted when it dies; its calls
    are not retried (the fetch worker renders a page again itself)."""
    return {"name": f"{name}/browser", "namespace": NAMESPACE, "num_cpus": 0,
            "memory": memory_mb * 1024 * 1024, "max_restarts": -1, "max_task_retries": 0,
            "max_concurrency": concurrency + 4}


REGISTRY_NAME = "crawl-registry"  # one per cluster; crawl actors' names all hold a "/"


def registry_options() -> dict[str, Any]:
    """The cluster's crawl registry: detached, restarted when it dies (the coordinators
    refill it), shared by every crawl (``get_if_exists``)."""
    return {"name": REGISTRY_NAME, "namespace": NAMESPACE, "num_cpus": 0,
            "lifetime": "detached", "max_restarts": -1, "max_task_retries": MAX_TASK_RETRIES,
            "max_concurrency": 100, "get_if_exists": True}
