"""One batch's hosts fetched politely: robots.txt first, per-host spacing, at most
``per_host`` requests at once, a pause after a Retry-After; each URL through the stages of
``raycrawl.fetch.page``."""

from __future__ import annotations

import asyncio
import time

from raycrawl.db_worker.robots import RobotsKind, RobotsPolicy, agent_token, origin_of
from raycrawl.errors import ErrorKind, retryable
from raycrawl.fetch import sitemaps
from raycrawl.fetch.collect import Collector, Link, Parent
from raycrawl.fetch.cookies import dump_cookies, load_cookies
from raycrawl.fetch.limits import throttled
from raycrawl.fetch.page import PageFetcher
from raycrawl.fetch.robots_fetch import fetch_robots
from raycrawl.fetch.sitemaps import SITEMAP
from raycrawl.formats.schemas import FetchRequest, HostCookies, RobotsFetch, ended


class HostFetcher:
    """Fetches one host's URLs of a batch into its collector."""

    def __init__(self, pages: PageFetcher, out: Collector) -> None:
        self.pages, self.opts, self.out = pages, pages.opts, out
        self.agent = agent_token(self.opts.user_agent)

    async def robots(self, origin: str, host: str) -> RobotsPolicy:
        """Fetch ``origin``'s robots.txt, record the fetch and return its policy."""
        pages = self.pages
        status, body, error = await fetch_robots(pages.session, pages.guard, pages.limit,
                                                 origin, self.opts.robots_timeout_s or None)
        if error is ErrorKind.BLOCKED_ADDRESS:  # the pages will be refused the same way
            return RobotsPolicy(RobotsKind.ALLOW_ALL, "", 0.0)
        self.out.robots.append(RobotsFetch(origin, host, status, body, error))
        return RobotsPolicy.from_fetch(status, body, time.time(), ttl_s=0.0, retry_s=0.0)

    def sitemap_links(self, origin: str, policy: RobotsPolicy, req: FetchRequest) -> None:
        """The sitemaps a robots.txt names, as links of it (depth 0, like seeds; as many
        host hops from a seed's host as ``req``, the URL it was read for)."""
        urls = [Link(url, SITEMAP) for url in policy.parser.sitemaps]
        if urls:
            robots = Parent(f"{origin}/robots.txt", 0, req.host, req.hops)
            self.out.link_rows(robots, urls, 0, [], self.opts, sitemaps.MAX_URLS)

    async def host(self, rows: list[FetchRequest]) -> None:
        """One host's URLs: robots.txt first if asked, then at most ``per_host`` at once,
        request starts at least the host's delay apart (with ``per_host`` 1, the delay runs
        from the end of the previous request), none after a 429/503 with Retry-After."""
        allowed, delay, read_robots = await self.allowed(rows)
        pending = list(reversed(allowed))
        next_start = time.monotonic() + (delay if read_robots else 0.0)
        jar = load_cookies(rows[0].host, rows[0].cookies) if self.opts.cookies else None

        async def worker() -> None:
            nonlocal next_start, delay
            while pending:
                row = pending.pop()
                now = time.monotonic()
                wait = next_start - now
                next_start = max(now, next_start) + delay
                if wait > 0:
                    await asyncio.sleep(wait)
                f = await self.pages.fetch(row, self.out, jar)
                if f.retry_after is not None:
                    # The host asked for a pause: its other URLs are not fetched (no row), the
                    # DB worker queues them again behind the Retry-After.
                    pending.clear()
                if self.opts.auto_throttle and (f.error is None or f.error.fetched):
                    # (within the batch it only grows: the DB worker's delay is the floor)
                    delay = throttled(delay, f.took, not retryable(f.error, f.status),
                                      row.delay_s)
                if self.opts.per_host == 1:
                    # One at a time: count the delay from the end of the request, so the
                    # server sees arrivals ``delay`` apart whatever the network jitter.
                    next_start = max(next_start, time.monotonic() + delay)

        await asyncio.gather(*(worker() for _ in range(min(self.opts.per_host, len(allowed)))))
        if jar is not None and allowed:
            self.out.cookies.append(HostCookies(rows[0].host, dump_cookies(jar)))

    async def allowed(self, rows: list[FetchRequest]) -> tuple[list[FetchRequest], float, bool]:
        """The URLs robots.txt lets be fetched (read first where asked), the host's delay
        (the crawl's or a Crawl-delay) and whether a robots.txt was read.  A disallowed URL
        gets its row; one whose robots.txt could not be read gets none: the DB worker queues
        it again as it was, behind the robots.txt's next try, or ends it once it gives up."""
        delay = max(r.delay_s for r in rows)
        allowed = []
        policies: dict[str, RobotsPolicy] = {}
        for row in rows:
            if row.robots_needed:
                origin = origin_of(row.url)
                if origin not in policies:
                    policies[origin] = await self.robots(origin, row.host)
                    if self.opts.sitemaps:
                        self.sitemap_links(origin, policies[origin], row)
                policy = policies[origin]
                delay = max(delay, policy.crawl_delay_s(self.agent))
                if policy.kind is RobotsKind.UNAVAILABLE:
                    continue
                if not policy.allows(row.url, self.agent):
                    self.out.page(ended(row, ErrorKind.ROBOTS))
                    continue
            allowed.append(row)
        return allowed, delay, bool(policies)
