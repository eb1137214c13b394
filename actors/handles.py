"""The driver's side of Ray: connecting, launching a crawl, calling its coordinator.

Everything the public API (``raycrawl.Crawl``) needs from Ray goes through here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import ray

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.phases import Phase
from raycrawl.coordinator.reports import CrawlStatus, SeedReply
from raycrawl.errors import CrawlStateError, CrawlUnavailable, RaycrawlError

from . import coordinator
from .options import NAMESPACE, actor_options, coordinator_name
from .peers import died_because

log = logging.getLogger(__name__)

INLINE_BYTES = 256 * 1024
"""In a Ray that raycrawl starts, objects up to this size travel inside an actor call rather
than through the object store (Ray's ``max_direct_call_object_size``, 100 KiB by default).
A batch's spider log on small pages is about 170 KB; through the object store such a call
cost about 1 ms more CPU on this 2-core VM (``benchmarks/README.md``, stop 40).  Past about
half a megabyte the object store is the cheaper way again."""
CALL_TIMEOUT_S = 120.0  # a control call the coordinator does not answer in time raises
PROBE_TIMEOUT_S = 10.0  # a Ray address whose port does not accept a connection by then is down


def connect(address: str | None, **init_options: Any) -> None:
    """Join Ray once per process: ``address`` if given, else Ray's own rule (RAY_ADDRESS, a
    cluster started with ``ray start``, else a new local instance).  :class:`ConnectionError`
    at once if a ``host:port`` address (given, or in RAY_ADDRESS) does not answer: Ray itself
    would retry it for minutes."""
    if ray.is_initialized():
        return
    probe = os.environ.get("RAY_ADDRESS") if address in (None, "auto") else address
    if probe and probe not in ("auto", "local") and "://" not in probe:
        host, _, port = probe.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), PROBE_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"cannot reach Ray at {probe}: {exc}") from None
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
    options.update(init_options)
    starting = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
    with _environ("RAY_max_direct_call_object_size", str(INLINE_BYTES)) if starting else (
            contextlib.nullcontext()):
        ray.init(address=address, **options)


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` while Ray starts (the processes it starts inherit it), unless
    the user set it: theirs wins.  Restored after, so the driver's process is left as it was."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


class CoordinatorHandle:
    """A crawl's coordinator actor, called synchronously from the driver (typed methods, each
    with a bound on how long it waits)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def launch(cls, config: CrawlConfig, seeds: list[str], generation: int = 1) -> tuple[
            CoordinatorHandle, SeedReply]:
        """Create the coordinator (detached: the crawl outlives its driver) and start it.
        :class:`CrawlStateError` if a crawl with the same id is on the cluster."""
        try:  # Ray refuses a name that is taken when the actor is created
            # On the driver's node: the crawl's state folder is this node's (node-local).
            actor = coordinator.remote_class().options(**actor_options(
                coordinator_name(config.crawl_id),
                node=ray.get_runtime_context().get_node_id())).remote(config, generation)
        except ray.exceptions.ActorAlreadyExistsError:
            raise CrawlStateError(
                f"a crawl with id {config.crawl_id} is already running on this Ray cluster "
                "(see `raycrawl list`): choose another --crawl-id") from None
        handle = cls(actor)
        try:
            reply: SeedReply = handle._get(actor.start.remote(seeds))
            return handle, reply
        except BaseException:  # don't leave a detached coordinator behind
            handle.abandon()
            raise

    @classmethod
    def lookup(cls, crawl_id: str) -> CoordinatorHandle | None:
        try:
            return cls(ray.get_actor(coordinator_name(crawl_id), namespace=NAMESPACE))
        except ValueError:
            return None

    @staticmethod
    def _get(ref: Any, timeout: float | None = CALL_TIMEOUT_S) -> Any:
        """The result of a call; :class:`CrawlUnavailable` if the coordinator did not answer
        in time or is gone for good (errors it raised are raised as they are)."""
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.RayTaskError as exc:  # raised on purpose in the actor: as it is
            if isinstance(exc.cause, RaycrawlError):
                raise exc.cause from None
            raise
        except ray.exceptions.GetTimeoutError:
            raise CrawlUnavailable(f"the coordinator did not answer within {timeout} s") from None
        except ray.exceptions.RayActorError as exc:
            reason = died_because(exc)
            raise CrawlUnavailable(f"the coordinator is unavailable: {reason}") from None

    def replace(self) -> None:
        """Kill a coordinator that stopped answering; Ray restarts it and it adopts the
        crawl from its state."""
        ray.kill(self.actor, no_restart=False)

    def status(self, timeout: float = CALL_TIMEOUT_S) -> CrawlStatus:
        status: CrawlStatus = self._get(self.actor.status.remote(), timeout=timeout)
        return status

    def add_seeds(self, urls: list[str]) -> SeedReply:
        reply: SeedReply = self._get(self.actor.add_seeds.remote(urls))
        return reply

    def pause(self) -> Phase:
        phase: Phase = self._get(self.actor.pause.remote())
        return phase

    def resume(self) -> Phase:
        phase: Phase = self._get(self.actor.resume.remote())
        return phase

    def scale(self, db_workers: int | None, strategy_workers: int | None) -> dict[str, int]:
        """Record a rescale's goal and start its new workers (the moves follow)."""
        asked: dict[str, int] = self._get(self.actor.scale.remote(db_workers, strategy_workers))
        return asked

    def rescaling(self) -> int:
        """Partitions still to move (at least 1 until the rescale is done; 0 when it is)."""
        return int(self._get(self.actor.rescaling.remote()))

    def stop(self) -> Phase:
        """Returns once the batches in flight are drained (however long that takes)."""
        phase: Phase = self._get(self.actor.stop.remote(), timeout=None)
        return phase

    def shutdown(self, timeout: float | None = None) -> None:
        self._get(self.actor.shutdown.remote(), timeout=timeout)

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
            self.shutdown(timeout=30)
        except (CrawlUnavailable, ray.exceptions.RayError) as exc:
            log.warning("coordinator did not shut down cleanly: %s", exc)
        self.kill()
