"""When a fetched URL is due again: fixed ages, adaptive intervals, the next visit's entry.

A URL is revisited when the crawl has ``recrawl_after_s`` or the URL its own interval (a
spider's ``follow(url, age=...)``, a seed's ``reseed_every_s``: fixed, pyspider's age and
@every).  Its next visit is due ``interval`` after the request started.  With ``adaptive``,
the crawl's interval follows each page, as Nutch's AdaptiveFetchSchedule does: a revisit that
found the page changed shrinks it (x ``adaptive_shrink``, 0.8), one that found it unchanged
grows it (x ``adaptive_grow``, 1.4: Nutch's dec_rate and inc_rate), within ``recrawl_min_s`` ..
``recrawl_max_s``.  For a page that changes every T seconds, a visit I after the last one sees a
change with odds I/T, so the interval settles where the two moves balance:
I/T = ln(grow) / (ln(grow) - ln(shrink)), 0.6 with the defaults (visits a little more often
than the page changes; rates nearer 1 settle nearer T, but adapt more slowly).

Every visit is a row, so a URL that answered, or failed in a way the next visit may not
(timeout, connection, 5xx, a host down or a robots.txt unreachable for a while), is revisited;
one that ended by the crawl's own rules (robots, traps, budgets, a blocked address, poison) is
not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from raycrawl.config import CrawlConfig
from raycrawl.errors import ErrorKind
from raycrawl.formats.entry import Entry

OVERDUE_S = 10.0  # a revisit due this long ago and not yet fetched counts as overdue

# Ended by the crawl's own rules, not by the page: no next visit.
_FINAL = frozenset({ErrorKind.ROBOTS, ErrorKind.TRAP, ErrorKind.HOST_BUDGET,
                    ErrorKind.BLOCKED_ADDRESS, ErrorKind.INVALID_URL,
                    ErrorKind.FETCH_TASK_FAILED, ErrorKind.QUARANTINED,
                    ErrorKind.INTERNAL_ERROR})


@dataclass(frozen=True, slots=True)
class Visit:
    """What a fetch found, as its spider-log row says it."""

    status: int | None
    error: str | None
    fetched_at: datetime
    changed: bool
    etag: str | None = None
    last_modified: str | None = None
    digest: bytes | None = None


class RevisitPolicy:
    """The crawl's revisit settings; see the module docstring."""

    def __init__(self, config: CrawlConfig) -> None:
        self.after_s = config.recrawl_after_s
        self.adaptive = config.adaptive
        self.min_s, self.max_s = config.recrawl_bounds_s
        self.grow, self.shrink = config.adaptive_grow, config.adaptive_shrink

    def interval(self, entry: Entry) -> float | None:
        """The URL's current interval (None: fetched once)."""
        if entry.interval_s is not None:
            return entry.interval_s
        return entry.adapted_s if entry.adapted_s is not None else self.after_s

    def next_visit(self, entry: Entry, visit: Visit, override: float | None = None
                   ) -> Entry | None:
        """The entry of the URL's next visit (its ``not_before`` the due time), or None if
        the URL is not revisited.  ``override`` is a due time a strategy set."""
        if visit.error is not None and ErrorKind(visit.error) in _FINAL:
            return None
        interval = self.interval(entry)
        if interval is None and override is None:
            return None
        started = visit.fetched_at.timestamp()
        # Only a revisit that got an answer saw whether the page changed (visit 1 is "changed"
        # by definition): only it adapts the interval.
        adaptive = (self.adaptive and entry.interval_s is None and entry.visit > 1
                    and visit.status is not None)
        adapted = entry.adapted_s
        due = override
        if interval is not None:
            if adaptive:
                interval = adapted = min(self.max_s, max(self.min_s, interval * (
                    self.shrink if visit.changed else self.grow)))
            if due is None:
                due = started + interval
        if visit.status is None:  # no answer: the last answer's validators still hold
            visit = dataclasses.replace(visit, etag=entry.etag,
                                        last_modified=entry.last_modified, digest=entry.digest)
        return dataclasses.replace(
            entry, visit=entry.visit + 1, attempts=0, crashes=0, not_before=due or started,
            etag=visit.etag, last_modified=visit.last_modified, digest=visit.digest,
            adapted_s=adapted, fetched_s=started)
