"""Browser workers: one headless Chromium per actor, each owned by the fetch worker it
renders for (``raycrawl.render`` has the browser itself).

A browser is a memory-heavy process that crashes: as an actor of its own it is placed by
Ray on the fetch worker's node with ``render_memory_mb`` of memory reserved, restarted by Ray
when its process dies, and it dies with its fetch worker (a crawl that ends or a worker that
retires leaves no browser behind).  It starts at the first page its fetch worker renders: a
crawl that renders nothing starts none.

A page whose browser died under it (Chromium killed, the actor killed or restarted) is
rendered again, up to ``CRASH_TRIES`` times; then the fault leaves the fetch worker's call,
and the DB worker runs the batch again (``raycrawl.fetch.rerun``): a browser's crash is an
infrastructure fault, never an error row of the URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raycrawl.fetch.netguard import AddressGuard
from raycrawl.fetch.options import FetchOptions
from raycrawl.render.browser import (
    Browser,
    BrowserCrashed,
    BrowserUnavailable,
    Rendered,
    RenderJob,
)
from raycrawl.render.spec import CRASH_TRIES, LAUNCH_TIMEOUT_S

from .logs import tag_logs
from .options import browser_options

log = logging.getLogger(__name__)


class BrowserWorker:
    """One browser (see the module docstring); safe to call concurrently."""

    def __init__(self, options: FetchOptions, name: str) -> None:
        crawl_id, _, role = name.partition("/")
        tag_logs(crawl_id, role)
        self.options = options
        self.browser: Browser | None = None

    async def render(self, job: RenderJob) -> Rendered:
        """Render ``job``; raises ``BrowserCrashed`` if the browser died under it,
        ``BrowserUnavailable`` if none starts here."""
        if self.browser is None:
            opts = self.options
            self.browser = Browser(opts.browser_path, opts.user_agent,
                                   AddressGuard(opts.allow_network), opts.browser_restart_pages,
                                   opts.render_concurrency)
        return await self.browser.render(job)

    def stats(self) -> dict[str, int]:
        """Browsers launched, crashes seen, and this actor's process id."""
        b = self.browser
        return {"launches": b.launches if b else 0, "crashes": b.crashes if b else 0,
                "pid": os.getpid()}

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()


_REMOTE_BROWSER = ray.remote(BrowserWorker)


class BrowserClient:
    """A fetch worker's browser worker, started at its first render (the fetch path's
    ``Renderer``)."""

    def __init__(self, options: FetchOptions, name: str) -> None:
        self.options, self.name = options, name
        self.actor: Any = None
        # Pages beyond the browser's wait here, not in it: a call's bound is its render's.
        self.slots = asyncio.Semaphore(max(1, options.render_concurrency))

    def _browser(self) -> Any:
        if self.actor is None:
            node = ray.get_runtime_context().get_node_id()
            self.actor = _REMOTE_BROWSER.options(
                **browser_options(self.name, self.options.render_memory_mb,
                                  self.options.render_concurrency),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(self.options, self.name)
        return self.actor

    async def render(self, job: RenderJob) -> Rendered:
        """``job`` rendered on this worker's browser, again on a new one if it died under it
        (up to ``CRASH_TRIES`` times, then ``BrowserCrashed``); a browser that does not answer
        within the page's bound is killed (Ray starts it again)."""
        async with self.slots:
            return await self._render(job)

    async def _render(self, job: RenderJob) -> Rendered:
        bound = job.spec.timeout_s + LAUNCH_TIMEOUT_S
        why = ""
        for _ in range(CRASH_TRIES):
            actor = self._browser()
            try:
                return await asyncio.wait_for(actor.render.remote(job), bound)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, BrowserUnavailable):
                    raise BrowserUnavailable(str(cause)) from None
                if not isinstance(cause, BrowserCrashed):
                    raise
                why = str(cause)
            except ray.exceptions.RayActorError as exc:  # died, restarting, unreachable
                why = f"the browser worker died: {type(exc).__name__}"
            except TimeoutError:
                why = f"the browser did not answer in {bound:.0f} s"
                ray.kill(actor, no_restart=False)
            log.warning("rendering %s: %s; rendering it again", job.url, why)
        raise BrowserCrashed(f"{job.url}: {why} ({CRASH_TRIES} times)")

    async def close(self) -> None:
        """Close the browser (bounded), then end its worker."""
        if self.actor is None:
            return
        try:
            await asyncio.wait_for(self.actor.close.remote(), 5.0)
        except (ray.exceptions.RayError, TimeoutError):
            pass
        ray.kill(self.actor, no_restart=True)
        self.actor = None
