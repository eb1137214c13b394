"""The coordinator actor: one per crawl, named ``<crawl>/coordinator``, never on the data path.

It creates the workers, routes seeds, moves the page budget, runs the reconcile loop and
serves control calls; its decisions come from ``raycrawl.coordinator.control``, its calls go
through the handles of ``actors.peers``.  The loop never dies: each part of a pass runs in its
own try/except.  Restarted by Ray, it adopts the workers (by name) and carries on; its phase
survives in ``coordinator.json``, the budget's allowances in the DB workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from typing import Any

import ray

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.budget import Move
from raycrawl.coordinator.control import CrawlControl, seed_feed
from raycrawl.coordinator.phases import Phase, Verdict
from raycrawl.coordinator.placement import PLACEMENT, STATE_RESOURCE, Node, place
from raycrawl.coordinator.reports import (
    CrawlStatus,
    DBWorkerReport,
    SeedReply,
    StrategyWorkerReport,
)
from raycrawl.coordinator.rescale import Mover, Rescaler, next_move, plan_goal
from raycrawl.coordinator.sharing import (
    CrawlEntry,
    lenders,
    scale_to,
    split_share,
    wants,
    within_share,
)
from raycrawl.db_worker.ratelimit import crawl_rate, split_rate
from raycrawl.errors import ConfigError, CrawlStateError
from raycrawl.storage import checkpoints
from raycrawl.storage.assignment import Assignment, Role, read_assignment, write_assignment
from raycrawl.storage.statefiles import read_json_if_present, write_json

from . import db_worker, strategy_worker
from .gate import Gate
from .logs import tag_logs
from .options import NAMESPACE, actor_options, db_worker_name, strategy_worker_name
from .peers import (
    DRAIN_TIMEOUTS,
    DBWorkerHandle,
    PeerFault,
    Peers,
    StrategyWorkerHandle,
    cluster_address,
    conform_items,
    fresh_or_last,
    patiently,
)
from .registry import RegistryHandle

log = logging.getLogger(__name__)

# Passes that fail in a row, for at least so long, end the crawl: long enough for Ray to see a
# lost node (its health checks: about 15 s), whose workers' calls fail meanwhile.
_MAX_FAILED_PASSES = 100
_FAILING_FOR_S = 60.0
SHARE_EVERY_S = 1.0  # how often the crawl renews its registration and CPU share
RESCALE_RETRY_S = 1.0  # a step of a rescale that failed is tried again after this long
RECREATE_TRIES = 5  # a worker that does not start after a rollback is created this often
NODES_EVERY_S = 2.0  # while a worker does not answer, whether its node is alive, this often


class Coordinator:
    """Lifecycle and control of one crawl generation; see the module docstring."""

    def __init__(self, config: CrawlConfig, generation: int = 1) -> None:
        tag_logs(config.crawl_id, "coordinator")
        self.config = config
        self.control = CrawlControl(config, generation, cluster=cluster_address())
        self.controls_pending = 0
        self.token, self.grants = secrets.token_hex(4), 0  # ids of allowance grows
        self.last_status = CrawlStatus()
        self.failed_passes, self.failing_since = 0, 0.0
        self.closed = False
        self.peers = Peers(config, lambda: read_assignment(config.state_dir))
        self.assignment = self.peers.assignment
        write_assignment(config.state_dir, self.assignment, config.out)  # (its copy, again:
        # a coordinator may have died between the two writes)
        self.db_workers: list[DBWorkerHandle] = []
        self.strategy_workers: list[StrategyWorkerHandle] = []
        # worker ("db-worker-0") -> the id of the node it is pinned to (its store's)
        self.placement: dict[str, str] = dict(
            read_json_if_present(config.state_dir, PLACEMENT) or {})
        self.nodes_checked = 0.0
        if self.control.adopted:  # restarted by Ray: adopt the running crawl's workers
            self._spawn()
        self.rescaler = Rescaler(config.state_dir, self._mover,
                                 lease_timeout_s=DRAIN_TIMEOUTS * config.actor_timeout_s,
                                 out=config.out)
        self.rescale_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.loop_task: asyncio.Task[None] | None = None
        self.registry = RegistryHandle(config.actor_timeout_s)
        self.share: int | None = None  # fetch workers granted (None: not yet)
        self.waiting = ""
        self.shared_at = -1e9
        # Checkpoints (raycrawl.storage.checkpoints): the seeds wait while one is cut; the
        # last published, its upload under way, and rollbacks since this coordinator started.
        self.seeds = Gate()
        self.checkpoint_due = time.monotonic() + config.checkpoint_every_s
        self.checkpoint: dict[str, Any] | None = None  # the last published epoch (None: unread)
        self.upload_task: asyncio.Task[None] | None = None
        self.rollbacks = 0  # (read from OUT with the last checkpoint)

    @property
    def phase(self) -> Phase:
        return self.control.phase

    async def start(self, seeds: list[str]) -> SeedReply:
        """Create the workers (or find the ones of an earlier generation's state), queue the
        seeds, start fetching; returns the seed reply once the seeds are durably queued."""
        if self.phase is not Phase.STARTING:  # a restarted coordinator: already running
            self._ensure_loop()
            return SeedReply()
        self._spawn()  # as many as the assignment says (a resume's crawl may have been scaled)
        try:
            await asyncio.gather(*(w.ready() for w in [*self.strategy_workers, *self.db_workers]))
        except PeerFault as exc:  # e.g. a store that does not open: one line, not a traceback
            raise CrawlStateError(f"the crawl's workers did not start: {exc}") from None
        # Each step is idempotent, and tried again when a worker is slow to answer (a loaded
        # machine, a short actor_timeout_s) rather than failing the crawl's start.
        reply = await patiently(lambda: self.add_seeds(seeds), "queueing the seeds")
        self.control.set_phase(Phase.RUNNING)
        await patiently(lambda: self._share_cpus(self.last_status, force=True),
                        "sharing the fetch workers")
        await patiently(lambda: self._start_workers(range(len(self.db_workers))),
                        "starting the DB workers")
        self._ensure_loop()
        return reply

    def _spawn(self) -> None:
        """Handles to every worker the assignment counts, creating those not running (a
        rescale's new workers, or ones it retired and brought back), each on its node."""
        workers = self.assignment.workers
        self._place()
        for i in range(len(self.strategy_workers), workers[Role.STRATEGY]):
            self.strategy_workers.append(self._create(Role.STRATEGY, i))
        for i in range(len(self.db_workers), workers[Role.DB]):
            self.db_workers.append(self._create(Role.DB, i))

    def _create(self, role: Role, i: int) -> Any:
        """A handle to worker ``i`` of ``role``, the running one of that name if there is,
        else a new one on the node :meth:`_place` chose for it."""
        cfg, timeout = self.config, self.config.actor_timeout_s
        if role is Role.STRATEGY:
            name = strategy_worker_name(cfg.crawl_id, i)
            node = self.placement.get(f"strategy-worker-{i}")
            return StrategyWorkerHandle(strategy_worker.remote_class().options(
                **actor_options(name, worker=True, node=node)).remote(cfg, i), timeout, name)
        name = db_worker_name(cfg.crawl_id, i)
        node = self.placement.get(f"db-worker-{i}")
        return DBWorkerHandle(db_worker.remote_class().options(
            **actor_options(name, worker=True, node=node)).remote(cfg, i), timeout, name)

    def _place(self) -> dict[str, str]:
        """Choose a node for every worker the assignment counts that has none alive
        (``raycrawl.coordinator.placement``), durably; returns the workers moved to another
        node (their node is gone: see :meth:`_relocate`)."""
        workers = self.assignment.workers
        names = [*(f"strategy-worker-{i}" for i in range(workers[Role.STRATEGY])),
                 *(f"db-worker-{i}" for i in range(workers[Role.DB]))]
        placement = place(names, _cluster_nodes(), self.placement)
        moved = {w: n for w, n in placement.items()
                 if w in self.placement and self.placement[w] != n}
        if placement != {w: self.placement.get(w) for w in placement}:
            write_json(self.config.state_dir, PLACEMENT, {**self.placement, **placement})
            self.placement.update(placement)
        return moved

    def _lost(self) -> list[str]:
        """The workers whose node is dead (asks Ray at most every few seconds), and those a
        call found pinned to a node that is gone: after a restart of this coordinator that
        placed them anew, the actor it found by name may still be the one of the dead node."""
        handles = [*self.db_workers, *self.strategy_workers]
        unplaceable = {_short(h.name) for h in handles if h.unplaceable}
        now = time.monotonic()
        if now - self.nodes_checked < NODES_EVERY_S:
            return sorted(unplaceable)
        self.nodes_checked = now
        alive = {n.node_id for n in _cluster_nodes() if n.alive}
        running = {_short(h.name) for h in handles}
        return sorted(unplaceable | {w for w, node in self.placement.items()
                                     if node not in alive and w in running})

    def _ensure_loop(self) -> None:
        if (self.loop_task is None or self.loop_task.done()) and not self.closed:
            self.loop_task = asyncio.get_running_loop().create_task(self._loop())
        if (self.assignment.rescaling and not self.closed and self.phase.active
                and (self.rescale_task is None or self.rescale_task.done())):
            self.rescale_task = asyncio.get_running_loop().create_task(self._rescale())

    # -- rescaling (see raycrawl.coordinator.rescale) ----------------------------------------

    def _mover(self, role: Role, worker: int) -> Mover:
        return (self.db_workers if role is Role.DB else self.strategy_workers)[worker]

    def _set_assignment(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.peers.reload()

    async def scale(self, db_workers: int | None = None,
                    strategy_workers: int | None = None) -> dict[str, int]:
        """Rescale to ``db_workers`` DB workers and ``strategy_workers`` strategy workers
        (None: as many as now): the goal is recorded and the new workers are started when
        this returns; the partitions then move a few at a time (:meth:`rescaling`).  Returns
        the workers asked for, by role."""
        async with self.lock:
            if not self.phase.active:
                raise CrawlStateError(f"the crawl is {self.phase}: only a running or paused "
                                      f"crawl is scaled (a stopped one: resume --db-workers)")
            a = read_assignment(self.config.state_dir)
            asked = {Role.DB: db_workers, Role.STRATEGY: strategy_workers}
            queued = [0] * a.partitions  # (a worker that does not answer: its count as 0)
            for found in await asyncio.gather(*(w.queued_by_partition()
                                                for w in self.db_workers),
                                              return_exceptions=True):
                for p, n in ({} if isinstance(found, BaseException) else found).items():
                    queued[p] += n
            goal, workers = {}, dict(a.workers)
            for role in Role:
                wanted = asked[role]
                if wanted is None:
                    wanted = a.wanted(role)
                if not 1 <= wanted <= a.partitions:
                    raise ConfigError(f"{role.value.replace('_', ' ')} must be 1 to the "
                                      f"number of partitions ({a.partitions}), not {wanted}")
                target = plan_goal(a.owners[role], wanted, queued)
                if target != a.owners[role] or wanted != a.workers[role]:
                    goal[role] = target
                workers[role] = max(a.workers[role], wanted)
            a = dataclasses.replace(a, goal=goal, workers=workers)
            write_assignment(self.config.state_dir, a, self.config.out)
            self._set_assignment(a)
            new = [*self.strategy_workers, *self.db_workers]
            self._spawn()
            new = [w for w in [*self.strategy_workers, *self.db_workers] if w not in new]
            await asyncio.gather(*(w.ready(self.config.actor_timeout_s) for w in new))
            log.info("rescaling to %s", a.rescale_to)
        self._ensure_loop()
        return a.rescale_to

    async def rescaling(self) -> int:
        """Partitions still to move: 0 once the last rescale is done (or the crawl ended: the
        rest is carried on if it is resumed), at least 1 until then (its last step retires
        the workers it left without partitions)."""
        self._ensure_loop()
        a = self.assignment
        return max(1, a.to_move) if a.rescaling and self.phase.active else 0

    async def _rescale(self) -> None:
        """Carry the rescale on, one move at a time, then retire the workers left without
        partitions.  A step that fails (a worker dead or restarting) is tried again."""
        while self.phase.active and not self.closed:
            try:
                a = read_assignment(self.config.state_dir)
                self.assignment = a
                if a.moving is not None:
                    started = time.monotonic()
                    self._set_assignment(await self.rescaler.move(a))
                    log.info("moved %s in %.2f s", a.moving, time.monotonic() - started)
                    continue
                move = next_move(a, Role.DB) or next_move(a, Role.STRATEGY)
                if move is not None:
                    self._set_assignment(self.rescaler.record(a, move))
                elif a.goal:
                    await self._retire(a)
                else:
                    return
            except Exception:
                log.exception("a step of the rescale failed; trying again in %g s",
                              RESCALE_RETRY_S)
                await asyncio.sleep(RESCALE_RETRY_S)

    async def _retire(self, a: Assignment) -> None:
        """Retire the workers the goal left without partitions: a DB worker drains (its
        output written), gives its unused budget back, and its last report is kept
        (``CrawlControl.retire``); then they are ended and the assignment counts them out."""
        for role in list(a.goal):
            keep = a.wanted(role)
            if role is Role.DB:
                for i in range(keep, len(self.db_workers)):
                    w = self.db_workers[i]
                    self.control.retiring.add(i)  # (until it is ended: see the end of this)
                    await w.drain()
                    await w.shrink_allowance(0)
                    self.control.retire(i, (await w.report()).replace(running=False))
                gone: list[Any] = self.db_workers[keep:]
                del self.db_workers[keep:]
            else:
                gone = self.strategy_workers[keep:]
                del self.strategy_workers[keep:]
            await asyncio.gather(*(w.close() for w in gone), return_exceptions=True)
            for w in gone:
                w.kill()
            if role is Role.DB:
                self.control.retiring.difference_update(range(keep, keep + len(gone)))
            goals = {r: g for r, g in a.goal.items() if r is not role}
            a = dataclasses.replace(a.with_workers(role, keep), goal=goals)
            write_assignment(self.config.state_dir, a, self.config.out)
            self._set_assignment(a)
        log.info("rescaled: %d DB workers, %d strategy workers", a.workers[Role.DB],
                 a.workers[Role.STRATEGY])

    async def heartbeat(self) -> None:  # from the workers: a restarted coordinator's loop resumes
        self._ensure_loop()

    async def add_seeds(self, urls: list[str]) -> SeedReply:
        """Canonicalise and route seeds to their strategy workers; returns once they are
        queued, with the seeds refused and why."""
        self.controls_pending += 1
        try:
            feed, reply = seed_feed(urls, self.config.partitions)
            async with self.seeds.passing():
                await self.peers.route(Role.STRATEGY, (feed,), lambda w, parts: (
                    self.strategy_workers[w].add_seeds(parts[0])))
            return reply
        finally:
            self.controls_pending -= 1

    async def _start_workers(self, indexes: Any) -> None:
        await asyncio.gather(*(self.db_workers[i].start(self.control.detector.gate)
                               for i in indexes))

    async def pause(self) -> Phase:
        """Cut no new batches; returns once the batches in flight are done and written."""
        async with self.lock:
            if self.phase is Phase.RUNNING:
                self.control.set_phase(Phase.PAUSED)
                await asyncio.gather(*(w.drain() for w in self.db_workers))
            return self.phase

    async def resume(self) -> Phase:
        async with self.lock:
            if self.phase is Phase.PAUSED:
                self.control.set_phase(Phase.RUNNING)
                await self._share_cpus(self.last_status, force=True)
                await self._start_workers(range(len(self.db_workers)))
            return self.phase

    async def stop(self) -> Phase:
        """Drain batches in flight and write all output; the crawl ends as ``stopped`` and
        can be resumed from its state."""
        await self._end(Phase.STOPPED, "stopped by user")
        return self.phase

    async def _end(self, phase: Phase, reason: str) -> None:
        """Drain the DB workers, then enter ``phase``.  STOPPING is saved first, so a
        coordinator restarted while draining ends the crawl the same way."""
        async with self.lock:
            if self.phase.terminal:
                return
            self.control.begin_end(phase, reason)
            # A worker that is dead or hangs does not hold the end up: its batches' leases
            # stay in its store, and the next start puts them back in the queue.
            for w, result in zip(self.db_workers, await asyncio.gather(
                    *(w.drain() for w in self.db_workers), return_exceptions=True)):
                if isinstance(result, PeerFault):
                    log.warning("%s did not drain: %s", w.name, result)
                elif isinstance(result, BaseException):
                    raise result
            if self.config.spider is not None:
                await conform_items(self.db_workers)
            self.control.set_phase(phase, reason)
        await self._refresh_status(force_write=True)

    async def _loop(self) -> None:
        while not self.phase.terminal:
            started = time.monotonic()
            if await self.step():
                self.failed_passes = 0
            else:  # a pass that keeps failing ends the crawl
                if not self.failed_passes:
                    self.failing_since = started
                self.failed_passes += 1
                if (self.failed_passes >= _MAX_FAILED_PASSES
                        and started - self.failing_since >= _FAILING_FOR_S):
                    await self._fail("reconcile kept failing")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.poll_interval_s - elapsed))
        await self._share_cpus(self.last_status, force=True)  # an ended crawl wants none
        # Ended, and no driver may ever come back (it was killed): give one ``linger_s`` to
        # collect the result, then free the workers and this actor.  The state stays on disk.
        await asyncio.sleep(self.config.linger_s)
        if not self.closed:
            log.warning("no driver collected crawl %s; shutting down", self.config.crawl_id)
            await self.shutdown()
            ray.actor.exit_actor()

    async def step(self) -> bool:
        """One reconcile pass: read the workers, restart a DB worker's loop that a restart
        stopped, open a depth layer or finish.  Returns whether every part succeeded."""
        try:
            status = await self._refresh_status()
        except PeerFault as exc:
            if exc.cannot_start:
                # A worker's store is gone or not its own: no restart mends it, but going
                # back to the last checkpoint may.
                try:
                    rolled_back = await self._roll_back(exc.cannot_start)
                except Exception:  # the next pass tries again (a bounded number of times)
                    log.exception("rolling back failed")
                    return False
                if not rolled_back:
                    await self._fail(exc.cannot_start)
                return True
            if lost := self._lost():
                try:
                    await self._relocate(lost)
                except Exception:
                    log.exception("creating the workers of a lost node again failed")
                    return False
                return True
            log.exception("reading the workers failed (%d passes in a row)",
                          self.failed_passes + 1)
            return False
        except Exception:
            log.exception("reading the workers failed (%d passes in a row)",
                          self.failed_passes + 1)
            return False
        moving = self.assignment.moving is not None  # (no finish while a move is under way)
        step = self.control.step(status, self.controls_pending + moving)
        if step.stall:
            log.warning("%s", step.stall)
        ok = True
        try:
            await self._share_cpus(status)
            await self._share_rate(status)
        except Exception:
            log.exception("sharing the cluster's CPUs or the crawl's rate failed")
            ok = False
        if step.restart:
            try:
                await self._start_workers(step.restart)
            except Exception:
                log.exception("restarting the loops of DB workers %s failed", step.restart)
                ok = False
        try:
            await asyncio.gather(*(self._move(m) for m in step.budget))
            if step.verdict is Verdict.ADVANCE_GATE:
                await asyncio.gather(*(w.set_gate(self.control.detector.gate)
                                       for w in self.db_workers))
            if step.end is not None:
                await self._end(*step.end)
        except Exception:
            log.exception("acting on %s failed", step)
            ok = False
        try:
            await self._checkpoint_if_due()
        except Exception:
            log.exception("cutting checkpoint failed")
        return ok

    async def _fail(self, reason: str) -> None:
        """End the crawl as FAILED, draining the DB workers first (their batches in flight
        complete, their output is written); if even that fails, FAILED without the drain."""
        try:
            await self._end(Phase.FAILED, reason)
        except Exception:
            log.exception("draining the workers of a failed crawl failed")
            self.control.set_phase(Phase.FAILED, reason)

    # -- checkpoints and rollbacks (see raycrawl.storage.checkpoints) -------------------------

    def _last_checkpoint(self) -> dict[str, Any]:
        """The last epoch published ({} before any), read from OUT once."""
        if self.checkpoint is None:
            epochs = checkpoints.published(self.config.out)
            self.checkpoint = checkpoints.read_epoch(self.config.out, epochs[-1]) \
                if epochs else {}
            rollback = checkpoints.read_rollback(self.config.out)
            self.rollbacks = rollback.generation if rollback is not None else 0
        return self.checkpoint

    def _checkpoint_fields(self) -> dict[str, Any]:
        last = self.checkpoint or {}
        return {"checkpoint": int(last.get("epoch", 0)),
                "checkpoint_at": float(last.get("at", 0.0)),
                "checkpoint_bytes": int(last.get("bytes", 0)),
                "checkpoint_uploaded": int(last.get("uploaded", 0)),
                "rollbacks": self.rollbacks}

    async def _checkpoint_if_due(self) -> None:
        """Cut the next epoch if it is due: the DB workers hold their hand-overs and the seeds
        wait, every worker makes its checkpoint, and all go on; the upload then runs in the
        background (the next cut waits for it).  Not while the crawl is rescaled (the epoch
        names one assignment) or not running."""
        cfg = self.config
        if (not cfg.checkpoint_every_s or self.phase is not Phase.RUNNING
                or time.monotonic() < self.checkpoint_due or self.assignment.rescaling
                or (self.upload_task is not None and not self.upload_task.done())):
            return
        self.checkpoint_due = time.monotonic() + cfg.checkpoint_every_s
        epoch = int((await asyncio.to_thread(self._last_checkpoint)).get("epoch", 0)) + 1
        token = f"{self.token}-checkpoint-{epoch}"
        hold_s = 2 * cfg.actor_timeout_s  # a worker left held by a dead coordinator lets go
        started = time.monotonic()
        async with self.lock:
            workers: list[Any] = [*self.strategy_workers, *self.db_workers]
            try:
                await self.seeds.close()
                await asyncio.gather(*(w.hold(token, hold_s) for w in self.db_workers))
                await asyncio.gather(*(w.checkpoint(epoch) for w in workers))
            finally:
                self.seeds.open()
                held = await asyncio.gather(*(w.release(token) for w in self.db_workers),
                                            return_exceptions=True)
        if not all(h is True for h in held):
            raise RuntimeError(f"checkpoint {epoch} dropped: a DB worker's hold ended early "
                               f"({held})")
        cut = {"assignment": self.assignment.to_dict(), "cut_s": round(
            time.monotonic() - started, 3), "fetched": self.last_status.fetched}
        self.upload_task = asyncio.get_running_loop().create_task(
            self._publish(epoch, workers, cut))

    async def _publish(self, epoch: int, workers: list[Any], cut: dict[str, Any]) -> None:
        """Wait for every worker's upload of ``epoch``, publish it, collect older ones."""
        started = time.monotonic()
        try:
            sizes = await asyncio.gather(*(w.upload_checkpoint(epoch) for w in workers))
            if not self.phase.active:  # ended meanwhile; its stores went on: not this epoch
                return
            data = {**cut, "at": time.time(), "stores": [s["store"] for s in sizes],
                    "bytes": sum(s["bytes"] for s in sizes),
                    "uploaded": sum(s["uploaded"] for s in sizes),
                    "upload_s": round(time.monotonic() - started, 3)}
            await asyncio.to_thread(checkpoints.publish, self.config.out, epoch, data)
            self.checkpoint = {"epoch": epoch, **data}
            log.info("checkpoint %d published: %d bytes uploaded of %d, cut in %.3f s",
                     epoch, data["uploaded"], data["bytes"], data["cut_s"])
            await asyncio.to_thread(checkpoints.collect, self.config.out)
        except Exception:
            log.exception("checkpoint %d not published", epoch)

    async def _roll_back(self, reason: str) -> bool:
        """A worker's store is gone: take the whole crawl back to its last published epoch
        (every worker restarts from its copy; the work since is done again).  False when
        there is none, or the rollbacks to it keep failing: the crawl then stops."""
        cfg = self.config
        if not cfg.checkpoint_every_s or not self.phase.active:
            return False
        last = await asyncio.to_thread(self._last_checkpoint)
        if not last:
            return False
        epoch = int(last["epoch"])
        before = await asyncio.to_thread(checkpoints.read_rollback, cfg.out)
        tries = before.tries + 1 if before is not None and before.epoch == epoch else 1
        if tries > checkpoints.MAX_ROLLBACKS:
            log.error("rolled back to checkpoint %d %d times; stopping", epoch, tries - 1)
            return False
        log.warning("rolling the crawl back to checkpoint %d: %s", epoch, reason)
        async with self.lock:
            if self.upload_task is not None:
                self.upload_task.cancel()
            # Nothing may hand over meanwhile: the stores are replaced under the workers.
            await asyncio.gather(*(w.drain() for w in self.db_workers), return_exceptions=True)
            rollback = checkpoints.Rollback((before.generation if before else 0) + 1, epoch,
                                            tries, reason, int(last.get("fetched", 0)))
            await asyncio.to_thread(checkpoints.write_rollback, cfg.out, rollback)
            a = Assignment.from_dict(last["assignment"])
            a = dataclasses.replace(a, epoch=max(a.epoch, self.assignment.epoch) + 1)
            write_assignment(cfg.state_dir, a, cfg.out)
            self._set_assignment(a)
            await self._restart_all()
            self.rollbacks += 1
        return True

    async def _restart_all(self) -> None:
        """Restart every worker: Ray restarts a live one in place; one whose node is gone is
        ended and created on another node, one whose start failed is created again.  As many
        of each role as the assignment counts are kept."""
        workers = self.assignment.workers
        moved = self._place()
        roles = self._roles()
        for handles, role in roles:
            for w in handles[workers[role]:]:
                w.kill()
            del handles[workers[role]:]
            for i, w in enumerate(handles):
                if _short(w.name) in moved:
                    handles[i] = await self._recreate(w, role, i)
                else:
                    w.replace(force=True)
        self._spawn()
        timeout = self.config.actor_timeout_s
        for attempt in range(RECREATE_TRIES):
            failed = 0
            for handles, role in roles:
                for i, result in enumerate(await asyncio.gather(
                        *(w.ready(timeout) for w in handles), return_exceptions=True)):
                    if isinstance(result, PeerFault):  # died in its creation (or the name
                        # still named the one ended): a new one
                        log.warning("%s did not start (%s); creating it again",
                                    handles[i].name, result)
                        handles[i] = self._create(role, i)
                        failed += 1
            if not failed:
                return
            await asyncio.sleep(attempt + 1)
        raise RuntimeError(f"the workers did not start again after {RECREATE_TRIES} tries")

    async def _relocate(self, lost: list[str]) -> None:
        """The workers of a lost node: created on live nodes.  Where a store of theirs is
        there (a disk the nodes share) they go on with it; where none is, they do not start,
        and the next pass rolls the crawl back to its last checkpoint (or stops it)."""
        log.warning("node %s is lost with %s; creating them on live nodes",
                    ", ".join(sorted({self.placement.get(w, "?")[:12] for w in lost})),
                    ", ".join(lost))
        async with self.lock:
            moved = self._place()
            for handles, role in self._roles():
                for i, w in enumerate(handles):
                    if _short(w.name) in moved or w.unplaceable:
                        handles[i] = await self._recreate(w, role, i)

    def _roles(self) -> tuple[tuple[list[Any], Role], ...]:
        """The stateful workers' handles, by role (the lists themselves: edited in place)."""
        return (self.db_workers, Role.DB), (self.strategy_workers, Role.STRATEGY)

    async def _recreate(self, handle: Any, role: Role, i: int) -> Any:
        """End ``handle``'s actor for good and create worker ``i`` of ``role`` anew, once its
        name is free (a bounded wait)."""
        handle.kill()
        for _ in range(50):
            try:
                ray.get_actor(handle.name, namespace=NAMESPACE)
            except ValueError:
                break
            await asyncio.sleep(0.2)
        return self._create(role, i)

    async def _share_cpus(self, status: CrawlStatus, force: bool = False) -> None:
        """Renew the crawl's registration (about once a second) and give each DB worker its
        part of the crawl's CPU share (see ``raycrawl.coordinator.sharing``).  An ended crawl
        leaves the registry.  If the registry does not answer, the last share stands (one
        fetch worker in all before any was granted)."""
        now = time.monotonic()
        if not force and now - self.shared_at < SHARE_EVERY_S:
            return
        self.shared_at = now
        cfg = self.config
        try:
            if self.phase.terminal:
                await self.registry.unregister(cfg.crawl_id)
                return
            ready = status.queued_by_reason  # (a DB worker without a fetch worker: "paused")
            scale = scale_to(cfg, self.phase, ready.get("ready", 0) + ready.get("paused", 0),
                             status.in_flight_batches)
            entry, cpus, crawls = await self.registry.register(CrawlEntry(
                cfg.crawl_id, cfg.state_dir, wants(cfg, self.phase, len(self.db_workers),
                                                      _cluster_memory(cfg), scale),
                str(self.phase), status.fetched, status.pages_per_s, scale_to=scale))
            self.share, self.waiting = entry.share, entry.waiting(cpus, crawls)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            log.warning("the crawl registry did not answer: %s", exc)
            self.registry.forget()
            if self.share is None:
                self.share = 1
            if self.phase.terminal:
                return
        reports = status.db_workers or tuple(DBWorkerReport() for _ in self.db_workers)
        has = [r.fetch_workers for r in reports]
        wanted = split_share(self.share or 0, [r.queued + r.in_flight for r in reports], has)
        quotas = within_share(wanted, has, self.share or 0,
                              [max(0, r.fetch_quota) for r in reports])
        await asyncio.gather(*(w.set_fetch_quota(q, lent)
                               for w, q, lent, r in zip(self.db_workers, quotas,
                                                        lenders(quotas), reports)
                               if force or r.fetch_quota != q or tuple(r.lenders) != lent))

    async def _share_rate(self, status: CrawlStatus) -> None:
        """Split the crawl's --max-rate between the DB workers with URLs to fetch (see
        ``raycrawl.db_worker.ratelimit``); a worker is told only when its part changes (a
        restarted one reports none)."""
        rate = crawl_rate(self.config)
        reports = status.db_workers
        if rate is None or len(reports) != len(self.db_workers):
            return
        parts = split_rate(*rate, [r.queued > 0 or r.in_flight > 0 for r in reports])
        await asyncio.gather(*(w.set_rate(*part) for w, part, r in
                               zip(self.db_workers, parts, reports)
                               if (r.rate_s, r.rate_burst) != part))

    async def _move(self, move: Move) -> None:
        """Apply one allowance move (a grow carries an id: applied twice, it counts once)."""
        worker = self.db_workers[move.worker]
        if move.to is not None:
            await worker.shrink_allowance(move.to)
        else:
            self.grants += 1
            await worker.grow_allowance(move.amount, f"{self.token}-{self.grants}")

    async def _refresh_status(self, force_write: bool = False) -> CrawlStatus:
        """Read every worker (each call bounded).  A worker that does not answer keeps its
        last report in the status, is replaced if it hung, and makes the pass fail
        (:class:`PeerFault`): nothing is decided on a stale report."""
        db_results, sw_results = await asyncio.gather(
            asyncio.gather(*(w.report() for w in self.db_workers), return_exceptions=True),
            asyncio.gather(*(w.report() for w in self.strategy_workers),
                           return_exceptions=True))
        last = self.last_status
        db = fresh_or_last(self.db_workers, db_results, last.db_workers, DBWorkerReport)
        sw = fresh_or_last(self.strategy_workers, sw_results, last.strategy_workers,
                           StrategyWorkerReport)
        a = self.assignment
        self.last_status = self.control.status(db, sw, force_write, self.share or 0,
                                               self.waiting, fields=dict(
            moving="" if a.moving is None else str(a.moving), moves_left=a.to_move,
            rescale_to=a.rescale_to, **self._checkpoint_fields()))
        faults = [r for r in [*db_results, *sw_results] if isinstance(r, PeerFault)]
        if faults:  # one a restart cannot mend first
            raise max(faults, key=lambda f: bool(f.cannot_start))
        return self.last_status

    async def status(self) -> CrawlStatus:
        """A fresh status snapshot (the last one taken, once the workers are shut down, and
        the last known report of a worker that does not answer)."""
        self._ensure_loop()
        if not self.closed:
            try:
                await self._refresh_status()
            except PeerFault as exc:
                log.warning("status with a worker's last report: %s", exc)
        return self.last_status.replace(phase=self.phase, reason=self.control.reason)

    async def shutdown(self) -> None:
        """Stop everything, close the stores and end the workers (the state stays on disk)."""
        if not self.phase.terminal:
            await self._end(Phase.STOPPED, "shut down")
        self.closed = True
        workers = [*self.db_workers, *self.strategy_workers]
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        try:
            await self._share_cpus(self.last_status, force=True)
        except Exception:
            log.exception("leaving the crawl registry failed")
        for w in workers:
            w.kill()


def remote_class() -> Any:
    """The actor class; options (name, namespace, resources) come from ``actors.options``."""
    return ray.remote(Coordinator)


def _short(name: str) -> str:
    """A worker's name without its crawl: ``db-worker-0``."""
    return name.rsplit("/", 1)[1]


def _cluster_nodes() -> list[Node]:
    return [Node(n["NodeID"], n.get("NodeManagerAddress", ""), bool(n.get("Alive")),
                 float(n.get("Resources", {}).get(STATE_RESOURCE, 0)) > 0)
            for n in ray.nodes()]


def _cluster_memory(config: CrawlConfig) -> float | None:
    """The memory Ray schedules on the cluster (bytes), for a crawl that renders pages
    (None: it renders none, or Ray cannot say)."""
    if not config.render_rule.may_render:
        return None
    try:
        return float(ray.cluster_resources().get("memory", 0)) or None
    except Exception:  # noqa: BLE001 (a GCS that does not answer: no cap this time)
        return None
