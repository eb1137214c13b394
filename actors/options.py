"""Names, namespace and Ray options of every actor and task, in one place."""

from __future__ import annotations

from typing import Any

NAMESPACE = "raycrawl"


def coordinator_name(crawl_id: str) -> str:
    return f"{crawl_id}/coordinator"


def strategy_worker_name(crawl_id: str, index: int) -> str:
    return f"{crawl_id}/strategy-worker-{index}"


def db_worker_name(crawl_id: str, index: int) -> str:
    return f"{crawl_id}/db-worker-{index}"


def actor_options(name: str, detached: bool = False) -> dict[str, Any]:
    """Actors mostly wait on I/O and each other, so they reserve no CPU: the CPUs go to fetch
    tasks.  The coordinator is detached so a crawl outlives the driver that started it."""
    options: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "num_cpus": 0,
                               "max_restarts": 0, "max_concurrency": 1000}
    if detached:
        options["lifetime"] = "detached"
    return options


# A fetch task takes one CPU; the DB worker retries a failed batch itself.
FETCH_TASK_OPTIONS: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
