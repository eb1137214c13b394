"""Typed handles to a crawl's actors, found by name, and who owns which partition.

Every Ray call one actor makes on another goes through a handle here, with the types of the
control plane (``raycrawl.coordinator.reports``) in and out, so the actors' own code holds no
``.remote``.  Every call is bounded (``actor_timeout_s``): a peer that does not answer in time,
or that died, raises :class:`PeerFault` (an infrastructure fault, never the URLs') and its
owner replaces it (``replace``: killed, then restarted by Ray).

Workers never hold handles passed at creation: they look peers up by their stable names (and
read the partition owners from the crawl's assignment, ``raycrawl.storage.assignment``), so an
actor restarted by Ray, whose ``__init__`` runs again with nothing else, finds everything it
needs by itself, and a handle stays valid across the restart of the actor it points to.

Rows go to the owner of their partition (:meth:`Peers.route`); a worker that does not own
some of them refuses the call (:class:`NotOwner`), and they are routed again from the
assignment read anew — until its owner takes them, within ``actor_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import ray

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.reports import DBWorkerReport, StrategyWorkerReport
from raycrawl.errors import StorageError
from raycrawl.formats.items import unified_schema
from raycrawl.routing import split_by_owner
from raycrawl.storage.assignment import Assignment, NotOwner, Role, read_assignment_copy
from raycrawl.storage.moves import PartitionCopy

from .options import NAMESPACE, coordinator_name, db_worker_name, strategy_worker_name

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 2.0  # how often workers tell the coordinator they are alive


def cluster_address() -> str:
    """The Ray cluster this process is connected to (its GCS address)."""
    address: str = ray.get_runtime_context().gcs_address
    return address


def died_because(exc: BaseException) -> str:
    """One line on why an actor died: the last error its creation task or call raised (Ray
    carries it as text only), else the kind of death."""
    reasons = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", str(exc), re.M)
    return f"{reasons[-1][0]}: {reasons[-1][1]}" if reasons else type(exc).__name__


class PeerFault(Exception):
    """A call to another actor timed out, or the actor died or was unreachable meanwhile."""

    def __init__(self, message: str, timed_out: bool = False, cannot_start: str = "",
                 unplaceable: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out  # no answer in time (hung), rather than dead or restarting
        # Dead for good: pinned to a node that is gone (Ray frees its name at once; only its
        # owner creating it again on a live node brings it back)
        self.unplaceable = unplaceable
        # The actor cannot start, and starting it again would not help (its store is gone,
        # or not its own): the one-line reason, which ends the crawl.
        self.cannot_start = cannot_start


# Errors of a worker's __init__ that a restart does not mend (the crawl ends with them).
_CANNOT_START = ("CrawlStateError", "StorageError")


DRAIN_TIMEOUTS = 10  # a drain may take this many actor timeouts
RESTART_GRACE_S = 30.0  # an actor replaced is not replaced again for this long


async def bounded(ref: Any, timeout_s: float | None, what: str) -> Any:
    """The result of ``ref``, or :class:`PeerFault` after ``timeout_s`` (None: no bound) or if
    the actor died; an error the peer raised is raised as it is (a PeerFault of the peer's own
    call stays one)."""
    try:
        return await asyncio.wait_for(ref, timeout_s)
    except TimeoutError:
        raise PeerFault(f"{what}: no answer within {timeout_s} s", timed_out=True) from None
    except ray.exceptions.ActorUnschedulableError as exc:  # pinned to a node that is gone
        raise PeerFault(f"{what}: cannot be placed: {exc}", unplaceable=True) from exc
    except ray.exceptions.RayActorError as exc:
        reason = died_because(exc)
        kind, _, message = reason.partition(": ")
        fatal = "creation task" in str(exc) and kind in _CANNOT_START
        raise PeerFault(f"{what}: {reason}", cannot_start=message if fatal else "") from exc
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, (PeerFault, StorageError)):  # the peer reports its own store
            raise PeerFault(f"{what}: {exc.cause}") from exc
        if isinstance(exc.cause, NotOwner):  # rows to route again
            raise exc.cause from None
        raise


START_TRIES = 3  # a step of a crawl's start is tried this often when a worker does not answer


async def patiently(step: Callable[[], Awaitable[T]], what: str, tries: int = START_TRIES) -> T:
    """``step()``, tried again (``tries`` times in all) while a peer fails it
    (:class:`PeerFault`: it did not answer in time, directly or in a call of its own, or it
    was restarting): for idempotent steps that a worker slow to answer on a loaded machine
    would otherwise fail.  A worker that cannot start or be placed, any other error, and the
    last fault are raised; nothing waits for ever (each try is bounded by its calls)."""
    for attempt in range(2, tries + 1):
        try:
            return await step()
        except PeerFault as exc:
            if exc.cannot_start or exc.unplaceable:
                raise
            log.warning("%s: %s; trying again (%d of %d)", what, exc, attempt, tries)
    return await step()


class _Handle:
    def __init__(self, actor: Any, timeout_s: float | None, name: str = "") -> None:
        self.actor = actor
        self.timeout_s = timeout_s
        self.name = name
        self.replaced_at = -1e9
        self.unplaceable = False  # a call found it pinned to a node that is gone (PeerFault)

    async def _call(self, method: str, *args: Any, timeout_s: float | None = -1.0) -> Any:
        ref = getattr(self.actor, method).remote(*args)
        try:
            return await bounded(ref, self.timeout_s if timeout_s == -1.0 else timeout_s,
                                 f"{self.name}.{method}")
        except PeerFault as exc:
            self.unplaceable = self.unplaceable or exc.unplaceable
            raise

    async def ready(self, timeout_s: float | None = None) -> None:
        """Returns once the actor is up (its ``__init__`` ran)."""
        await self._call("__ray_ready__", timeout_s=timeout_s)

    async def close(self) -> None:
        """Close the actor's stores (it stays alive until killed)."""
        await self._call("close")

    def kill(self) -> None:
        ray.kill(self.actor)

    def replace(self, force: bool = False) -> None:
        """Kill an actor that stopped answering; Ray restarts it (it reopens its store and
        recovers what it held).  Not again while the restart may still be under way (within
        :data:`RESTART_GRACE_S` of the last, unless ``force``): a call queued for a starting
        actor times out too, and killing it then would kill every restart in turn on a loaded
        machine (found by the SIGSTOP test: twenty restarts killed, the actor dead for good)."""
        now = time.monotonic()
        if not force and now - self.replaced_at < max(RESTART_GRACE_S, self.timeout_s or 0):
            return
        self.replaced_at = now
        ray.kill(self.actor, no_restart=False)


class _MoverHandle(_Handle):
    """A worker's part in a partition's move (``raycrawl.coordinator.rescale.Mover``)."""

    async def fence(self, partitions: list[int]) -> int:
        return int(await self._call("fence", partitions))

    async def export(self, partitions: list[int]) -> list[PartitionCopy]:
        copies: list[PartitionCopy] = await self._call("export_partitions", partitions)
        return copies

    async def adopt(self, copies: list[PartitionCopy]) -> None:
        await self._call("adopt_partitions", copies)

    async def sync(self) -> None:
        await self._call("sync")

    async def drop(self, partitions: list[int]) -> None:
        await self._call("drop_partitions", partitions)


    async def checkpoint(self, epoch: int) -> None:
        await self._call("checkpoint", epoch)

    async def upload_checkpoint(self, epoch: int) -> dict[str, Any]:
        """Bounded loosely (ten actor timeouts): it uploads the checkpoint's new files."""
        sizes: dict[str, Any] = await self._call(
            "upload_checkpoint", epoch,
            timeout_s=DRAIN_TIMEOUTS * self.timeout_s if self.timeout_s else None)
        return sizes


class StrategyWorkerHandle(_MoverHandle):
    async def add_seeds(self, seeds: pa.RecordBatch) -> int:
        return int(await self._call("add_seeds", seeds))

    async def process_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> int:
        """Returns once the links it scheduled are queued in the DB workers."""
        return int(await self._call("process_spider_log", pages, links))

    async def report(self) -> StrategyWorkerReport:
        report: StrategyWorkerReport = await self._call("report")
        return report


class DBWorkerHandle(_MoverHandle):
    async def enqueue(self, scoring: pa.RecordBatch) -> int:
        """Durable in the DB worker when this returns; idempotent."""
        return int(await self._call("enqueue", scoring))

    async def start(self, gate: int | None) -> None:
        await self._call("start", gate)

    async def set_gate(self, gate: int | None) -> None:
        await self._call("set_gate", gate)

    async def set_fetch_quota(self, quota: int, lenders: tuple[int, ...] = ()) -> None:
        await self._call("set_fetch_quota", quota, lenders)

    async def set_rate(self, rate_s: float, burst: float) -> None:
        await self._call("set_rate", rate_s, burst)

    async def drain(self) -> None:
        """Returns once the batches in flight are done.  Each batch is bounded by its own
        fetch and hand-over bounds, so the call is bounded only loosely, by ten times
        ``actor_timeout_s``: past that the worker hangs (:class:`PeerFault`)."""
        await self._call("drain", timeout_s=DRAIN_TIMEOUTS * self.timeout_s
                         if self.timeout_s else None)

    async def hold(self, token: str, timeout_s: float) -> None:
        await self._call("hold", token, timeout_s)

    async def release(self, token: str) -> bool:
        return bool(await self._call("release", token))

    async def report(self) -> DBWorkerReport:
        report: DBWorkerReport = await self._call("report")
        return report

    async def grow_allowance(self, amount: int, grant: str) -> int:
        return int(await self._call("grow_allowance", amount, grant))

    async def item_schema(self) -> pa.Schema | None:
        schema: pa.Schema | None = await self._call("item_schema")
        return schema

    async def conform_items(self, schema: pa.Schema) -> int:
        """Not bounded by ``actor_timeout_s``: it rewrites the worker's item files."""
        return int(await self._call("conform_items", schema, timeout_s=None))

    async def shrink_allowance(self, to: int) -> int:
        return int(await self._call("shrink_allowance", to))

    async def queued_by_partition(self) -> dict[int, int]:
        found: dict[int, int] = await self._call("queued_by_partition")
        return found


class CoordinatorClient(_Handle):
    """The coordinator as its workers call it."""

    def heartbeat(self) -> None:
        """Fire and forget: a restarted coordinator resumes its loop on the first call."""
        self.actor.heartbeat.remote()


async def conform_items(db_workers: list[DBWorkerHandle]) -> None:
    """Give every ``OUT/items`` file the crawl's one schema (at its end), so any Parquet
    reader sees every field: one reading the first file's schema would miss fields seen later.
    Best effort: the files read together either way (``formats.items.read_items``)."""
    try:
        found = await asyncio.gather(*(w.item_schema() for w in db_workers))
        schemas = [s for s in found if s is not None]
        if schemas:
            schema = unified_schema(schemas)
            await asyncio.gather(*(w.conform_items(schema) for w in db_workers))
    except Exception:  # a worker that failed or did not answer: the files stay as they are
        log.exception("conforming the item files failed")


def fresh_or_last(handles: list[Any], results: list[Any], last: tuple[Any, ...],
                   empty: Any) -> tuple[Any, ...]:
    """The reports read, the last known one for a worker that did not answer; a worker that
    hung (no answer within its bound) is replaced.  An error a worker raised is raised."""
    reports = []
    for i, (handle, result) in enumerate(zip(handles, results)):
        if isinstance(result, PeerFault):
            if result.timed_out:
                log.warning("%s; replacing it", result)
                handle.replace()
            reports.append(last[i] if i < len(last) else empty())
        elif isinstance(result, BaseException):
            raise result
        else:
            reports.append(result)
    return tuple(reports)


Batches = tuple[pa.RecordBatch, ...]
REROUTE_WAIT_S = 0.1  # refused by the owner the assignment names: read it again after this


class Peers:
    """Handles to a crawl's actors, looked up on first use and cached, and the partitions'
    owners (the crawl's assignment, read again when a worker refuses rows)."""

    def __init__(self, config: CrawlConfig,
                 read: Callable[[], Assignment] | None = None) -> None:
        self.config = config
        self._handles: dict[str, Any] = {}
        self.last_heartbeat = 0.0
        # A worker reads the copy in OUT; the coordinator (``read``) its own, in its state.
        self._read = read or (lambda: read_assignment_copy(config.out))
        self.reload()

    def reload(self) -> Assignment:
        self.assignment = self._read()
        self._owners = {role: np.asarray(self.assignment.owners[role], dtype=np.int64)
                        for role in Role}
        return self.assignment

    def _get(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = self._handles[name] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # not created yet, or retired by a rescale
                raise PeerFault(f"{name}: no such actor") from None
        return handle

    def strategy_worker(self, index: int) -> StrategyWorkerHandle:
        name = strategy_worker_name(self.config.crawl_id, index)
        return StrategyWorkerHandle(self._get(name), self.config.actor_timeout_s, name)

    def db_worker(self, index: int) -> DBWorkerHandle:
        name = db_worker_name(self.config.crawl_id, index)
        return DBWorkerHandle(self._get(name), self.config.actor_timeout_s, name)

    def coordinator(self) -> CoordinatorClient:
        name = coordinator_name(self.config.crawl_id)
        return CoordinatorClient(self._get(name), self.config.actor_timeout_s, name)

    async def route(self, role: Role, batches: Batches,
                    send: Callable[[int, Batches], Awaitable[Any]]) -> None:
        """``send(worker, parts)`` the rows of ``batches`` (each with a ``partition`` column)
        of each worker's partitions, to every worker with rows; returns once all of them took
        theirs.  Rows a worker refused (:class:`NotOwner`: a partition moved) are routed again
        from the assignment read anew; refused still past ``actor_timeout_s`` (the owner is
        taking the partition over), :class:`PeerFault`."""
        deadline = time.monotonic() + (self.config.actor_timeout_s or 60.0)
        while True:
            # (the epoch of the owners these rows go by: a route running alongside may read
            # the assignment anew while this one waits for its workers)
            owners, epoch = self._owners[role], self.assignment.epoch
            split = [split_by_owner(b, owners) for b in batches]
            workers = sorted(set().union(*split))
            parts = {w: tuple(s.get(w, b.slice(0, 0)) for s, b in zip(split, batches))
                     for w in workers}
            results = await asyncio.gather(*(_sent(send, w, parts[w]) for w in workers),
                                           return_exceptions=True)
            refused = [parts[w] for w, r in zip(workers, results) if isinstance(r, NotOwner)]
            failed = [(w, r) for w, r in zip(workers, results)
                      if isinstance(r, BaseException) and not isinstance(r, NotOwner)]
            if failed or refused:
                self.reload()
            if failed:
                self._handles.clear()  # (a worker retired and made again is a new actor)
                if self.assignment.epoch == epoch:
                    raise failed[0][1]
                # The assignment changed meanwhile (a partition moved, a worker retired):
                # their rows go to their owners now (taken twice, they change nothing).
                refused += [parts[w] for w, _ in failed]
            if not refused:
                return
            batches = tuple(pa.concat_batches([r[i] for r in refused])
                            for i in range(len(batches)))
            if self.assignment.epoch == epoch:  # not moved yet: its owner is taking it over
                if time.monotonic() >= deadline:
                    raise PeerFault(f"rows of partitions {sorted(_partitions(batches))[:8]} "
                                    f"refused by their owners for {self.config.actor_timeout_s}"
                                    f" s")
                await asyncio.sleep(REROUTE_WAIT_S)

    async def hand_over(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        """Send each strategy worker the pages and links of its partitions; return when all
        of them have processed theirs (and queued the links they scheduled)."""
        await self.route(Role.STRATEGY, (pages, links), lambda w, parts: (
            self.strategy_worker(w).process_spider_log(*parts)))

    def heartbeat(self) -> None:
        """Tell the coordinator this worker is alive, every few seconds (a restarted
        coordinator resumes its reconcile loop on the first call it gets)."""
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_S:
            self.last_heartbeat = now
            self.coordinator().heartbeat()

    def strategy_workers(self) -> list[StrategyWorkerHandle]:
        return [self.strategy_worker(i)
                for i in range(self.assignment.workers[Role.STRATEGY])]

    def db_workers(self) -> list[DBWorkerHandle]:
        return [self.db_worker(i) for i in range(self.assignment.workers[Role.DB])]


async def _sent(send: Callable[[int, Batches], Awaitable[Any]], worker: int,
                parts: Batches) -> Any:
    """``send(worker, parts)``, its errors raised inside the coroutine (gathered)."""
    return await send(worker, parts)


def _partitions(batches: Batches) -> set[int]:
    return {p for b in batches for p in b.column("partition").to_pylist()}
