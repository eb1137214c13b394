"""The crawl's rate and burst (``--max-rate PAGES_PER_S``, ``--burst N``): a token bucket,
split between the DB workers.

Each DB worker holds a :class:`TokenBucket` with its part of the rate and of the burst
(:func:`split_rate`); a URL cut for fetching takes a token, a URL its batch ends without a
request (robots.txt, a trap, a parked host) gives it back.  The coordinator splits the rate
between the DB workers with URLs to fetch, on each reconcile pass, so one worker's idle share
goes to the others; the parts always add up to the crawl's rate and burst, so whatever the
split, the crawl never starts more than ``burst + rate × t`` fetches in ``t`` seconds.  Until
the coordinator has split it (a start, a restart), a worker holds an equal part; a bucket
starts empty.
"""

from __future__ import annotations

from raycrawl.config import CrawlConfig

IDLE_CHECK_S = 1.0  # a worker with no part of the rate looks again after this long


class TokenBucket:
    """``rate_s`` tokens a second, at most ``capacity`` held; starts empty (a worker restarted
    while the others hold their parts must not add a burst of its own)."""

    def __init__(self, rate_s: float, capacity: float, now: float) -> None:
        self.rate_s, self.capacity = rate_s, capacity
        self.tokens, self.at = 0.0, now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate_s)
            self.at = now

    def available(self, now: float) -> int:
        """Whole tokens that may be taken now."""
        self._refill(now)
        return int(self.tokens)

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def give_back(self, n: int, now: float) -> None:
        """Return tokens taken for URLs that were not fetched after all."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + n)

    def wait_s(self, now: float) -> float:
        """Seconds until a whole token is there (0: now)."""
        self._refill(now)
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate_s if self.rate_s > 0 else IDLE_CHECK_S

    def set(self, rate_s: float, capacity: float, now: float) -> None:
        """A new part of the crawl's rate and burst (the tokens held are kept, up to it)."""
        self._refill(now)
        self.rate_s, self.capacity = rate_s, capacity
        self.tokens = min(self.tokens, capacity)


def split_rate(rate_s: float, burst: int, wanting: list[bool]) -> list[tuple[float, float]]:
    """Each DB worker's (rate, burst) part: equal parts for those ``wanting`` (URLs to fetch),
    none for the others, or equal parts for all when none wants.  The parts add up to
    ``rate_s`` and ``burst`` (a burst part is one fetch at least, so a burst smaller than the
    workers wanting is raised to one each: a part below one would never let a URL go)."""
    n = len(wanting)
    if n == 0:
        return []
    takers = list(wanting) if any(wanting) else [True] * n
    k = sum(takers)
    return [(rate_s / k, max(1.0, burst / k)) if t else (0.0, 0.0) for t in takers]


def crawl_rate(config: CrawlConfig) -> tuple[float, int] | None:
    """The crawl's (rate, burst), None without ``max_pages_per_s``; the burst defaults to one
    second's worth of the rate (at least one fetch)."""
    if config.max_pages_per_s is None:
        return None
    return config.max_pages_per_s, config.burst or max(1, round(config.max_pages_per_s))
