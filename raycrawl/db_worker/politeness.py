"""Per-host politeness and health of the hosts one DB worker owns (no I/O, no Ray)."""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any

from raycrawl.errors import ErrorKind
from raycrawl.fetch.limits import throttled

# A host's part of one batch lasts about this long at most: a cut takes at most
# HOST_RUN_S / delay of its URLs (at least one, at most ``host_batch_cap``).  A long run
# would hold the host's batch (and a pause or a stop, which wait for batches in flight).
HOST_RUN_S = 8.0


class Wait(enum.StrEnum):
    """Why a host's URLs wait for a time (a host pushed back)."""

    POLITENESS = "politeness"  # the delay (or Crawl-delay) since its last request
    BACKOFF = "host-backoff"  # its requests failed: backed off exponentially
    RETRY_AFTER = "retry-after"  # it answered 429/503 with a Retry-After
    ROBOTS = "robots-retry"  # its robots.txt could not be read: tried again later


class HostSlots:
    """Per-host politeness and health of the hosts one DB worker owns.

    A host is leased to one spider-feed batch at a time (the fetch worker runs at most
    ``per_host`` of its requests at once and spaces their starts by the host's delay); after
    the batch returns, the host waits its delay before the next batch may start it.  The delay
    is ``delay_s`` or the host's robots Crawl-delay, whichever is longer.  A host whose batches
    keep failing is backed off exponentially and, after ``park_after`` failures in a row,
    parked: its queued URLs then end with the park reason instead of being fetched.

    With ``auto_throttle`` a host's delay follows its response times
    (:func:`raycrawl.fetch.limits.throttled`: each answer moves it halfway to that answer's
    duration, an error answer never shortens it, never below ``delay_s``).
    """

    def __init__(self, delay_s: float, backoff_s: float = 1.0, max_backoff_s: float = 600.0,
                 park_after: int = 5, auto_throttle: bool = False) -> None:
        self.delay_s = delay_s
        self.auto_throttle = auto_throttle
        self.auto_delay: dict[str, float] = {}  # a host's delay learnt from its answers
        self.backoff_s, self.max_backoff_s, self.park_after = backoff_s, max_backoff_s, park_after
        self.leased: set[str] = set()
        self.ready_at: dict[str, float] = {}
        self.crawl_delay: dict[str, float] = {}
        self.failures: Counter[str] = Counter()
        self.parked: dict[str, ErrorKind] = {}
        self.parked_until: dict[str, float] = {}  # parks that end (monotonic clock)
        self.why: dict[str, Wait] = {}  # why a host waits until its ready_at

    def delay(self, host: str) -> float:
        return max(self.delay_s, self.crawl_delay.get(host, 0.0), self.auto_delay.get(host, 0.0))

    def batch_cap(self, host: str, cap: int) -> int:
        """How many of ``host``'s URLs one batch may take: ``cap``, or fewer if its delay
        would make them last longer than ``HOST_RUN_S`` (a Crawl-delay of 10 s: one)."""
        delay = self.delay(host)
        return cap if delay <= 0 else max(1, min(cap, int(HOST_RUN_S / delay)))

    def observe(self, host: str, duration_s: float, answered_ok: bool) -> None:
        """With ``auto_throttle``: one of ``host``'s requests took ``duration_s`` (its answer
        was usable, or not: a 429/5xx, a timeout)."""
        if not self.auto_throttle:
            return
        was = self.auto_delay.get(host, self.delay_s)
        self.auto_delay[host] = throttled(was, duration_s, answered_ok, self.delay_s)

    def available(self, host: str, now: float) -> bool:
        if self.park_reason(host, now) is not None:
            return host not in self.leased  # drained as errors, a batch at a time
        return host not in self.leased and self.ready_at.get(host, 0.0) <= now

    def park_reason(self, host: str, now: float) -> ErrorKind | None:
        """Why ``host``'s URLs end without a request (None: it is not parked); a park with an
        end is over at its end."""
        reason = self.parked.get(host)
        if reason is not None and self.parked_until.get(host, now + 1.0) <= now:
            del self.parked[host], self.parked_until[host]
            self.failures.pop(host, None)
            return None
        return reason

    def lease(self, hosts: set[str]) -> None:
        self.leased |= hosts

    def release(self, hosts: set[str], now: float) -> None:
        self.leased -= hosts
        for host in hosts:
            delay = self.delay(host)
            if delay > 0:
                self.push_back(host, now + delay, Wait.POLITENESS)
        if len(self.ready_at) > 100_000:  # forget hosts whose wait is over
            self.ready_at = {h: t for h, t in self.ready_at.items() if t > now}
            self.why = {h: w for h, w in self.why.items() if h in self.ready_at}
        if len(self.auto_delay) > 100_000:  # forget learnt delays that are the crawl's own
            self.auto_delay = {h: d for h, d in self.auto_delay.items() if d > self.delay_s}

    def push_back(self, host: str, until: float, why: Wait) -> None:
        """No request to ``host`` starts before ``until`` (monotonic clock)."""
        if until > self.ready_at.get(host, 0.0):
            self.ready_at[host] = until
            self.why[host] = why

    def wait_reason(self, host: str, now: float) -> Wait | None:
        """Why ``host`` may not start a request now (None: it may, unless it is leased)."""
        return self.why.get(host) if self.ready_at.get(host, 0.0) > now else None

    def record_outcome(self, host: str, healthy: bool, now: float, park: bool = True) -> None:
        """After a batch: a host that gave a usable answer is healthy; one whose every
        request failed (timeout, connection, 429/5xx) is backed off exponentially, and, unless
        ``park`` is False (it did answer, with errors), parked after ``park_after`` in a row."""
        if healthy:
            self.failures.pop(host, None)
            return
        self.failures[host] += 1
        n = self.failures[host]
        self.push_back(host, now + min(self.max_backoff_s, self.backoff_s * 2 ** (n - 1)),
                       Wait.BACKOFF)
        if park and n >= self.park_after:
            self.park(host, ErrorKind.HOST_UNREACHABLE)

    def park(self, host: str, reason: ErrorKind, until: float | None = None) -> None:
        """End ``host``'s queued URLs with ``reason`` from now on (until ``until``, monotonic
        clock, when given)."""
        if host not in self.parked:
            self.parked[host] = reason
            if until is not None:
                self.parked_until[host] = until

    def export(self, hosts: set[str], now: float) -> dict[str, Any]:
        """What is kept of ``hosts`` (not leased: a move waits for their batches), with times
        as seconds from ``now``: another process's monotonic clock is not this one's."""
        return {
            "wait": {h: (t - now, self.why[h].value) for h, t in self.ready_at.items()
                     if h in hosts and t > now},
            "crawl_delay": {h: d for h, d in self.crawl_delay.items() if h in hosts},
            "auto_delay": {h: d for h, d in self.auto_delay.items() if h in hosts},
            "failures": {h: n for h, n in self.failures.items() if h in hosts},
            "parked": {h: (r.value, self.parked_until[h] - now if h in self.parked_until
                           else None) for h, r in self.parked.items() if h in hosts}}

    def adopt(self, state: dict[str, Any], now: float) -> None:
        """Take over what :meth:`export` wrote (``now``: this process's monotonic clock)."""
        for host, (wait, why) in state.get("wait", {}).items():
            self.push_back(host, now + wait, Wait(why))
        self.crawl_delay.update(state.get("crawl_delay", {}))
        self.auto_delay.update(state.get("auto_delay", {}))
        self.failures.update(state.get("failures", {}))
        for host, (reason, left) in state.get("parked", {}).items():
            self.park(host, ErrorKind(reason), None if left is None else now + left)

    def forget(self, hosts: set[str]) -> None:
        """Drop what is kept of ``hosts`` (their partition moved away)."""
        for table in (self.ready_at, self.why, self.crawl_delay, self.auto_delay, self.failures,
                      self.parked, self.parked_until):
            for host in hosts.intersection(table):
                del table[host]

    def counts(self) -> dict[str, int]:
        """Hosts by state: ``active`` (leased to a batch), ``backed-off`` (failing, not
        parked), ``parked``."""
        failing = sum(1 for host in self.failures if host not in self.parked)
        return {"active": len(self.leased), "backed-off": failing, "parked": len(self.parked)}
