"""Crawls sharing one cluster: who gets how many fetch workers (no Ray here).

Every crawl's coordinator registers with the cluster's one registry (``actors.registry``) about
once a second, saying how many fetch workers it could use (``wants``: its ``fetch_workers``
cap, none while paused).  The registry divides the cluster's CPUs among the crawls that want
them (:func:`fair_shares`: max-min fair, the remainder to the crawls registered first), so
together they never hold more fetch workers than the cluster has CPUs, and a crawl started
second gets half the CPUs instead of waiting for the first to end.  A crawl whose share is 0
(more crawls than CPUs) says so in its status.  The coordinator then splits its crawl's share
among its DB workers (:func:`split_share`).

Entries that are not renewed for ``ttl_s`` (a coordinator killed for good, a cluster's crawl
whose actors are gone) drop out, so a lost crawl does not hold a share forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.phases import Phase

REGISTRY_TTL_S = 15.0  # an entry not renewed for this long is dropped
ANY = 1 << 20  # a crawl with no cap wants as many fetch workers as it can get
BATCHES_PER_WORKER = 3  # overlapping batches per fetch worker (benchmarks/README.md, step 13)


def workers_for(batches: int) -> int:
    """Fetch workers that run ``batches`` at once."""
    return -(-batches // BATCHES_PER_WORKER)


def scale_to(config: CrawlConfig, phase: Phase, ready_urls: int, in_flight_batches: int) -> int:
    """The fetch workers a crawl asks the cluster's autoscaler for (0: none): with
    ``max_fetch_workers``, while it runs, as many as would run its batches in flight and its
    ready URLs cut into batches (three a worker), at least one, at most ``max_fetch_workers``
    (and its ``fetch_workers`` cap).  It follows the work: as the ready URLs drain, the crawl
    asks for fewer, its share shrinks with it (:func:`wants`), its fetch workers retire and
    the autoscaler may remove the nodes they leave idle."""
    if config.max_fetch_workers is None or phase is not Phase.RUNNING:
        return 0
    batches = in_flight_batches + -(-max(0, ready_urls) // config.batch_size)
    cap = min(config.max_fetch_workers, config.fetch_workers or ANY)
    return min(cap, max(1, workers_for(batches)))


def wants(config: CrawlConfig, phase: Phase, db_workers: int | None = None,
          memory_bytes: float | None = None, scale: int = 0) -> int:
    """The fetch workers a crawl could use in ``phase``: none unless it is starting or running
    (a paused crawl holds no CPU); else its ``fetch_workers`` cap, else three batches a worker
    of an explicit ``batches_in_flight`` per DB worker (``db_workers`` of them: as many as
    it runs now), else any number.  A crawl that renders pages (one browser per fetch
    worker, ``render_memory_mb`` each) wants no more than the cluster's ``memory_bytes``
    hold browsers.  A crawl that asks the autoscaler (``scale``: :func:`scale_to`) wants no
    more than it asks for."""
    if phase not in (Phase.STARTING, Phase.RUNNING):
        return 0
    if config.fetch_workers is not None:
        want = config.fetch_workers
    elif config.batches_in_flight is not None:
        want = (db_workers or config.db_workers) * workers_for(config.batches_in_flight)
    else:
        want = ANY
    if config.render_rule.may_render and memory_bytes is not None:
        want = min(want, max(1, int(memory_bytes // (config.render_memory_mb * 2**20))))
    if scale:
        want = min(want, scale)
    return want


@dataclass(frozen=True, slots=True)
class CrawlEntry:
    """One crawl on the cluster, as its coordinator last registered it."""

    crawl_id: str
    state: str = ""  # the state folder
    wants: int = 0  # fetch workers it could use now (0: paused or ended)
    phase: str = ""
    fetched: int = 0
    pages_per_s: float = 0.0
    share: int = 0  # fetch workers granted at the last registration
    scale_to: int = 0  # fetch workers it asks the autoscaler for (0: it does not ask)
    registered_at: float = 0.0  # first registration (orders the remainder)
    seen_at: float = 0.0  # last registration

    def waiting(self, cpus: int, crawls: int) -> str:
        """Why the crawl fetches nothing though it wants to ("" when it has a share)."""
        return (f"waiting for CPUs: {crawls} crawls share {cpus}"
                if self.wants and not self.share else "")

    def line(self, cpus: int, crawls: int) -> str:
        """The crawl's line of ``raycrawl list``: its id first."""
        waiting = self.waiting(cpus, crawls)
        return (f"{self.crawl_id}  {self.phase}  fetched {self.fetched}  "
                f"{self.pages_per_s} pages/s  fetch workers {self.share}"
                f"{f', {waiting}' if waiting else ''}  "
                f"state {self.state}")


def fair_shares(cpus: int, wants: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Max-min fair shares of ``cpus`` fetch workers among crawls, in registration order.

    A crawl never gets more than it wants; what one does not want goes to the others; a
    remainder that does not divide evenly goes to the crawls first in ``wants``.  The shares
    sum to at most ``cpus``.
    """
    shares = {crawl: 0 for crawl, _ in wants}
    left = max(0, int(cpus))
    hungry = [(crawl, want) for crawl, want in wants if want > 0]
    while left > 0 and hungry:
        each = max(1, left // len(hungry))
        still = []
        for crawl, want in hungry:
            if left == 0:
                break
            give = min(each, want - shares[crawl], left)
            shares[crawl] += give
            left -= give
            if shares[crawl] < want:
                still.append((crawl, want))
        hungry = still
    return shares


def split_share(share: int, work: Sequence[int], has: Sequence[int] | None = None) -> list[int]:
    """A crawl's fetch workers split among its DB workers: evenly, the remainder first to the
    workers that hold fetch workers now (``has``), then to those with work (queued URLs or
    batches in flight).  A worker left with none is lent a peer's (``actors.fetch``), so who
    holds the remainder only decides where the processes run: it stays put, for a move
    starts a new fetch worker (a process: seconds of CPU)."""
    n = len(work)
    if n == 0:
        return []
    holds = has or [0] * n
    base, extra = divmod(max(0, share), n)
    quotas = [base] * n
    order = sorted(range(n), key=lambda i: (holds[i] == 0, work[i] == 0, i))
    for i in order[:extra]:
        quotas[i] += 1
    return quotas


def lenders(quotas: Sequence[int]) -> list[tuple[int, ...]]:
    """For each DB worker, the peers whose fetch workers it runs its batches on: those with a
    quota, for a worker without one (none for a worker with its own)."""
    holding = tuple(i for i, q in enumerate(quotas) if q > 0)
    return [() if q > 0 else holding for q in quotas]


def within_share(quotas: Sequence[int], has: Sequence[int], share: int,
                 granted: Sequence[int] | None = None) -> list[int]:
    """``quotas`` with their growth held back so that the DB workers never hold more than
    ``share`` fetch workers together: a worker whose quota shrank holds its surplus until its
    batches end, so another may grow only into what is free now (the next pass, with fresh
    ``has`` counts, grants the rest).  ``granted`` is each worker's quota now: a worker may
    still grow into it until it hears the new one (the new quotas are sent together), so what
    it may hold counts as the larger of the two."""
    claims = [max(h, g) for h, g in zip(has, granted or has)]
    free = max(0, share - sum(claims))
    out = list(quotas)
    for i, (quota, claim) in enumerate(zip(quotas, claims)):
        if quota > claim:
            grow = min(quota - claim, free)
            out[i] = claim + grow
            free -= grow
    return out


class CrawlTable:
    """The registry's table of crawls and their shares (the registry actor wraps it)."""

    def __init__(self, ttl_s: float = REGISTRY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.entries: dict[str, CrawlEntry] = {}
        self.cpus = 0

    def register(self, entry: CrawlEntry, now: float) -> CrawlEntry:
        """Add or renew ``entry``; returns it with the share it is granted now."""
        old = self.entries.get(entry.crawl_id)
        first = old.registered_at if old is not None else now
        self.entries[entry.crawl_id] = replace(entry, registered_at=first, seen_at=now)
        self._reshare(now)
        return self.entries[entry.crawl_id]

    def unregister(self, crawl_id: str, now: float) -> None:
        self.entries.pop(crawl_id, None)
        self._reshare(now)

    def set_cpus(self, cpus: int, now: float) -> None:
        self.cpus = int(cpus)
        self._reshare(now)

    def requested(self) -> int:
        """The CPUs to ask the cluster's autoscaler for: 0 when no crawl asks; else every
        crawl's fetch workers (one CPU each), what it asks for or the share it holds,
        whichever is more."""
        if not any(e.scale_to for e in self.entries.values()):
            return 0
        return sum(max(e.scale_to, e.share) for e in self.entries.values())

    def crawls(self, now: float) -> list[CrawlEntry]:
        self._reshare(now)
        return sorted(self.entries.values(), key=lambda e: e.registered_at)

    def _expire(self, now: float) -> None:
        stale = [c for c, e in self.entries.items() if now - e.seen_at > self.ttl_s]
        for crawl_id in stale:
            del self.entries[crawl_id]

    def _reshare(self, now: float) -> None:
        self._expire(now)
        ordered = sorted(self.entries.values(), key=lambda e: e.registered_at)
        shares: Mapping[str, int] = fair_shares(self.cpus, [(e.crawl_id, e.wants)
                                                            for e in ordered])
        self.entries = {e.crawl_id: replace(e, share=shares[e.crawl_id]) for e in ordered}
