"""The control plane's messages: what workers report, what seeding answers, a crawl's status.

Frozen dataclasses, so a report cannot change after it was taken and every field has a type.
Each also reads as a mapping of its field names (``status["fetched"]``, ``status.get("reason")``)
for notebook users and for ``status.json``, which :meth:`CrawlStatus.to_dict` writes and
:meth:`CrawlStatus.from_dict` reads back.  Counters by kind are plain ``{word: count}`` maps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

from raycrawl.coordinator.phases import Phase


class _Record(Mapping[str, Any]):
    """Read-only mapping access to a dataclass's fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (enums as their words, nested reports as dicts)."""
        out: dict[str, Any] = {}
        for name in self._names():
            value = getattr(self, name)
            if isinstance(value, tuple) and value and isinstance(value[0], _Record):
                value = [v.to_dict() for v in value]
            elif isinstance(value, Phase):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record of a :meth:`to_dict` (unknown keys are ignored, missing ones default)."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: tuple(v) if isinstance(v, list) else v  # JSON has no tuples
                      for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class DBWorkerReport(_Record):
    """A DB worker's state, read by the coordinator on every reconcile pass."""

    node: str = ""  # the address of the node it runs on (its store's)
    queued: int = 0
    queued_at_gate: int = 0  # queued URLs in layers up to the current depth gate
    in_flight: int = 0  # batches cut and not yet completed
    leased_urls: int = 0
    done_total: int = 0  # URLs completed, durable (survives restarts)
    running: bool = False  # its feed loop is cutting batches
    activity: int = 0  # monotonic: enqueued + cut + completed
    fetched: int = 0  # rows output by this incarnation
    errors: int = 0
    retries: int = 0
    loop_errors: int = 0
    batches_failed: int = 0
    fetch_faults: int = 0  # fetch calls that failed (a worker died, restarted, hung or raised)
    robots_fetched: int = 0
    parked_hosts: int = 0
    rows_written: int = 0
    fetch_s: float = 0.0  # seconds batches spent fetching, summed
    hand_over_s: float = 0.0  # seconds batches spent handing their spider log over, summed
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    retry_causes: Mapping[str, int] = field(default_factory=dict)  # error kind or status
    storage_error: str = ""  # the first write or read of its store that failed
    allowance: int = 0  # its share of max_pages (see raycrawl.coordinator.budget)
    held: int = 0  # its URLs done or leased: what of the allowance is used
    items_total: int = 0  # spider items committed, durable (in files or staged for the next)
    items_written: int = 0  # of those, in recorded OUT/items files
    out_of_scope: int = 0  # links left out by the scope (this incarnation)
    callback_errors: tuple[str, ...] = ()  # the latest "url: detail" of callback errors
    warc_records: int = 0  # rows committed with their WARC records (this incarnation)
    fetch_quota: int = -1  # fetch workers it may hold (-1: not set by the coordinator yet)
    fetch_workers: int = 0  # fetch workers it holds (retiring ones included)
    fetch_workers_started: int = 0  # fetch workers it started (this incarnation)
    lenders: tuple[int, ...] = ()  # DB workers whose fetch workers it may use, holding none
    guest_calls: int = 0  # batches it ran on a lender's fetch workers (this incarnation)
    guest_refused: int = 0  # of its batches, refused by a lender that stopped lending
    rate_s: float = 0.0  # its part of max_pages_per_s (0: none, or no rate limit)
    rate_burst: float = 0.0  # its part of the burst
    not_due: int = 0  # URLs whose next visit is not due yet (durable count)
    due: int = 0  # revisits due and queued
    overdue: int = 0  # of those, due for more than raycrawl.db_worker.revisits.OVERDUE_S
    revisits: int = 0  # rows committed for visits after the first (this incarnation)
    # Why its queued URLs are not being fetched, each counted once (DBShard.reasons' words)
    queued_by_reason: Mapping[str, int] = field(default_factory=dict)
    partitions: str = ""  # the partitions it owns, as ranges ("0-63,128")
    partitions_owned: int = 0
    moved_in: int = 0  # partitions moved to it (this incarnation)
    moved_out: int = 0  # partitions moved away from it (this incarnation)

    def replace(self, **changes: Any) -> DBWorkerReport:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class StrategyWorkerReport(_Record):
    """A strategy worker's counters and whether its strategy says the crawl is done."""

    node: str = ""  # the address of the node it runs on (its store's)
    strategy_finished: bool = False
    pages_crawled: int = 0
    request_errors: int = 0
    scheduled: int = 0
    links_seen: int = 0
    duplicate_pages: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)  # by error kind (trap, ...)
    storage_error: str = ""
    partitions: str = ""  # the partitions it owns, as ranges ("0-63,128")
    partitions_owned: int = 0

    def replace(self, **changes: Any) -> StrategyWorkerReport:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class SeedReply(_Record):
    """The answer to seeding: how many seeds were queued, and the ones refused with why."""

    accepted: int = 0
    invalid: tuple[tuple[str, str], ...] = ()


def _sum(reports: tuple[DBWorkerReport, ...], name: str) -> int:
    return sum(getattr(r, name) for r in reports)


def _merge(maps: list[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for m in maps:
        for key, n in m.items():
            total[key] = total.get(key, 0) + n
    return total


def _freshness(db: tuple[DBWorkerReport, ...]) -> float | None:
    fresh, due = _sum(db, "not_due"), _sum(db, "due")
    return round(fresh / (fresh + due), 3) if fresh + due else None


@dataclass(frozen=True, slots=True)
class CrawlStatus(_Record):
    """One snapshot of a crawl, as ``Crawl.stats()``, ``raycrawl status`` and ``status.json``
    show it."""

    crawl_id: str = ""
    generation: int = 1
    phase: Phase = Phase.STARTING
    reason: str = ""
    fetched: int = 0  # URLs completed, durable
    queued: int = 0
    in_flight_batches: int = 0
    errors: int = 0
    error_kinds: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    parked_hosts: int = 0
    rows_written: int = 0
    items_total: int = 0  # spider items committed, durable
    items_written: int = 0
    out_of_scope: int = 0  # links not followed: out of the crawl's scope
    callback_errors: tuple[str, ...] = ()  # a sample: "url: callback: error"
    warc_records: int = 0  # rows whose WARC records are in OUT/warc (since the last start)
    pages_per_s: float = 0.0
    elapsed_s: float = 0.0
    fetch_workers: int = 0  # the crawl's share of the cluster's CPUs (one fetch worker each)
    waiting: str = ""  # why it fetches nothing though work is queued (e.g. no CPU share)
    # Why each queued URL is not being fetched (ready, politeness, host-backoff, retry-after,
    # robots-retry, host-busy, retry-backoff, parked, depth-gate, budget, paused: see
    # raycrawl.db_worker.shard.DBShard.reasons); the counts add up to ``queued``.
    queued_by_reason: Mapping[str, int] = field(default_factory=dict)
    stalls: int = 0  # times the crawl sat with work queued, nothing in flight and no wait
    # Revisits: URLs not due yet, revisits due and queued, those overdue, revisit rows (since
    # the last start) and their rate, and freshness: the share of revisited URLs whose last
    # fetch is within their interval (not due yet), None before any.
    not_due: int = 0
    due: int = 0
    overdue: int = 0
    revisits: int = 0
    revisits_per_s: float = 0.0
    freshness: float | None = None
    depth_gate: int | None = None
    out: str = ""
    state: str = ""
    db_workers: tuple[DBWorkerReport, ...] = ()
    strategy_workers: tuple[StrategyWorkerReport, ...] = ()
    updated_at: float = 0.0
    # Rescaling (raycrawl.coordinator.rescale): the move in progress ("" when none), how many
    # partitions are still to move, and the workers asked for ({} when not rescaling).
    moving: str = ""
    moves_left: int = 0
    rescale_to: Mapping[str, int] = field(default_factory=dict)
    # Checkpoints (raycrawl.storage.checkpoints): the last epoch published in OUT/_checkpoints
    # (0: none yet), when, its stores' bytes and those its upload added; the crawl's rollbacks.
    checkpoint: int = 0
    checkpoint_at: float = 0.0
    checkpoint_bytes: int = 0
    checkpoint_uploaded: int = 0
    rollbacks: int = 0

    def __post_init__(self) -> None:
        # Built from JSON (status.json) the nested reports and the phase arrive as plain values.
        object.__setattr__(self, "phase", Phase(self.phase))
        object.__setattr__(self, "db_workers", tuple(
            w if isinstance(w, DBWorkerReport) else DBWorkerReport.from_dict(w)
            for w in self.db_workers))
        object.__setattr__(self, "strategy_workers", tuple(
            w if isinstance(w, StrategyWorkerReport) else StrategyWorkerReport.from_dict(w)
            for w in self.strategy_workers))

    @classmethod
    def aggregate(cls, db: tuple[DBWorkerReport, ...], sw: tuple[StrategyWorkerReport, ...],
                  **fields_: Any) -> CrawlStatus:
        """The crawl-wide sums of the workers' reports, with the coordinator's own fields."""
        return cls(fetched=_sum(db, "done_total"), queued=_sum(db, "queued"),
                   in_flight_batches=_sum(db, "in_flight"), errors=_sum(db, "errors"),
                   error_kinds=_merge([r.error_kinds for r in db]),
                   retries=_sum(db, "retries"), parked_hosts=_sum(db, "parked_hosts"),
                   rows_written=_sum(db, "rows_written"), items_total=_sum(db, "items_total"),
                   items_written=_sum(db, "items_written"), out_of_scope=_sum(db, "out_of_scope"),
                   callback_errors=tuple(e for r in db for e in r.callback_errors)[-5:],
                   warc_records=_sum(db, "warc_records"), not_due=_sum(db, "not_due"),
                   due=_sum(db, "due"), overdue=_sum(db, "overdue"),
                   revisits=_sum(db, "revisits"), freshness=_freshness(db),
                   queued_by_reason=_merge([r.queued_by_reason for r in db]),
                   db_workers=db, strategy_workers=sw, **fields_)

    def replace(self, **changes: Any) -> CrawlStatus:
        return dataclasses.replace(self, **changes)
