"""The crawling-strategy API (Frontera's verbs) and loading a strategy by name.

A strategy runs inside a strategy worker and sees only the URLs of that worker's partitions.
It decides what to crawl by calling :meth:`CrawlingStrategy.schedule`; the worker keeps the URL
states, so a strategy never sees a URL it has already been shown as a new link.

Lifecycle of a URL, as a strategy sees it::

    add_seeds(seeds) ──schedule──> queued ──fetched──> page_crawled(response)
                                          └─failed──> request_error(request, error)
    links_extracted(request, new_links)  (after filter_extracted_links)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from raycrawl.config import CrawlConfig
from raycrawl.errors import StrategyError
from raycrawl.models import Request, Response, URLState

ScheduleSink = Callable[[Request, float, bool, float | None], None]


class CrawlingStrategy:
    """Base class of crawling strategies; override the verbs you need.

    ``schedule(request, score)`` queues a URL for fetching with a priority (higher first);
    requests deeper than ``max_depth`` and URLs already queued or crawled are not queued again,
    whatever the strategy asks, so the crawl stays exactly-once.  ``at`` (epoch seconds) sets
    when a URL is due: a new URL's first fetch, or a fetched URL's next visit (a revisit).

    **State.** What the worker keeps for a strategy is per URL — its state, depth and score —
    and lives in the worker's store with the URL's partition: it survives restarts and moves
    with the partition to another worker.  Anything a strategy keeps on ``self`` is that
    worker process's only: it is lost when the worker restarts and is not moved with a
    partition, so keep there only what can be rebuilt (caches, counters for logging), never
    what decides which URLs are crawled.
    """

    def __init__(self, config: CrawlConfig, sink: ScheduleSink) -> None:
        self.config = config
        self._sink = sink

    @classmethod
    def from_config(cls, config: CrawlConfig, sink: ScheduleSink) -> CrawlingStrategy:
        """The factory workers use; override to read strategy settings from ``config``."""
        return cls(config, sink)

    @staticmethod
    def read_seeds(lines: Iterable[str]) -> list[str]:
        """URLs of a seeds file: one per line; blank lines and ``#`` comments are skipped."""
        urls = []
        for line in lines:
            text = line.strip()
            if text and not text.startswith("#"):
                urls.append(text)
        return urls

    def add_seeds(self, seeds: list[Request]) -> None:
        for seed in seeds:
            self.schedule(seed, 1.0)

    def page_crawled(self, response: Response) -> None:
        """A page was fetched (any HTTP status); ``response.body`` is not shipped here.
        Called on every visit of a revisited URL (``response.request.visit``)."""

    def filter_extracted_links(self, request: Request, links: list[Request]) -> list[Request]:
        """Drop links before they are looked at; the default keeps all."""
        return links

    def links_extracted(self, request: Request, links: list[Request]) -> None:
        """Links of ``request`` seen for the first time in this crawl."""

    def request_error(self, request: Request, error: str) -> None:
        """Fetching ``request`` failed with an error kind (``timeout``, ``connection``, ...)."""

    def finished(self) -> bool:
        """True ends the crawl even with URLs left in the queue."""
        return False

    def schedule(self, request: Request, score: float = 1.0, dont_queue: bool = False,
                 at: float | None = None) -> None:
        """Record ``score`` for ``request`` and, unless ``dont_queue``, queue it for fetching
        (not before ``at``, epoch seconds, when given).  A URL fetched already is queued again
        only with ``at``: its next visit is then due at that time."""
        max_depth = self.config.max_depth
        if max_depth is not None and request.depth > max_depth:
            return
        revisit = at is not None and request.state in (URLState.CRAWLED, URLState.ERROR)
        if request.state is not URLState.NOT_CRAWLED and not dont_queue and not revisit:
            return
        self._sink(request, float(score), not dont_queue, None if at is None else float(at))


def load_strategy(name: str) -> type[CrawlingStrategy]:
    """A strategy class by name: ``bfs``/``dfs`` (built in) or ``package.module:Class``."""
    module_name, _, attr = name.partition(":")
    if not attr:
        module_name, attr = f"strategies.{name}", "Strategy"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"strategy {name!r} cannot be imported: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, CrawlingStrategy)):
        raise StrategyError(f"strategy {name!r} is not a CrawlingStrategy subclass")
    return cls
