"""The driver's side of Ray: connecting, launching a crawl, calling its coordinator.

Everything the public API (``raycrawl.Crawl``) needs from Ray goes through here.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from raycrawl.config import CrawlConfig

from . import coordinator
from .options import NAMESPACE, actor_options, coordinator_name

log = logging.getLogger(__name__)


def connect(address: str | None, **init_options: Any) -> None:
    """Join Ray once per process: ``address`` if given, else Ray's own rule (RAY_ADDRESS, a
    cluster started with ``ray start``, else a new local instance)."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
    options.update(init_options)
    ray.init(address=address, **options)


class CoordinatorHandle:
    """A crawl's coordinator actor, called synchronously from the driver."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def launch(cls, config: CrawlConfig, seeds: list[str], generation: int = 1) -> tuple[
            CoordinatorHandle, dict[str, Any]]:
        """Create the coordinator (detached: the crawl outlives its driver) and start it."""
        actor = coordinator.remote_class().options(
            **actor_options(coordinator_name(config.crawl_id))).remote(config, generation)
        handle = cls(actor)
        try:
            return handle, handle.call("start", seeds)
        except BaseException:  # don't leave a detached coordinator behind
            handle.abandon()
            raise

    @classmethod
    def lookup(cls, crawl_id: str) -> CoordinatorHandle | None:
        try:
            return cls(ray.get_actor(coordinator_name(crawl_id), namespace=NAMESPACE))
        except ValueError:
            return None

    def call(self, method: str, *args: Any, timeout: float | None = 120.0) -> Any:
        return ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)

    def alive(self) -> bool:
        """Whether the coordinator answers (a dead cluster's leftovers do not)."""
        try:
            ray.get(self.actor.__ray_ready__.remote(), timeout=30)
            return True
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return False

    def kill(self) -> None:
        ray.kill(self.actor)

    def abandon(self) -> None:
        """End a crawl whose start failed: shut its workers down if the coordinator still
        answers, then kill the coordinator."""
        try:
            self.call("shutdown", timeout=30)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("coordinator did not shut down cleanly: %s", exc)
        self.kill()

