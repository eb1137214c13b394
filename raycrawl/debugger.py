"""One callback on one URL, without a crawl: ``raycrawl parse`` and :func:`parse` (Scrapy's
``scrapy parse``, pyspider's single-step debugger).

The URL takes the crawl's own fetch path (:func:`raycrawl.fetch.batch.fetch_hosts`): the
address guard, robots.txt (unless ``robots=False``), the request as a crawl sends it, the body
limits, the spider's callback on the response, the links the crawl would queue (scope rules
applied).  Nothing is written: no state, no output, no WARC.  What the callback yields comes
back as values (:class:`Parsed`), and its traceback when it raises.

Decided: a redirect is not followed (a crawl queues its target as a URL of its own, fetched
with the same callback); :class:`Parsed` names the target, to be parsed in turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import html
import json
import traceback
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raycrawl.config import CrawlConfig, config_from_mapping
from raycrawl.errors import ConfigError, ErrorKind, SpiderError
from raycrawl.fetch.batch import fetch_hosts
from raycrawl.fetch.callbacks import CallbackRunner, Outcome, callback_of
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.entry import pack_meta
from raycrawl.formats.schemas import FetchOutcome, FetchRequest, LinkFound, RobotsFetch
from raycrawl.spider import (
    DEFAULT_CALLBACK,
    Follow,
    Spider,
    SpiderResponse,
    load_spider,
    spider_spec,
)
from raycrawl.urls import url_info

__all__ = ["Parsed", "parse"]


@dataclass(frozen=True)
class Parsed:
    """What one callback made of one URL.

    ``error`` is None when the callback ran and returned normally; else why not, as the
    ``error`` column of ``OUT/pages`` says it (``robots``, ``timeout``, ``callback-error``...)
    or ``http-<status>`` for an answer the callback does not get (a 404 the spider's
    ``handle_status`` does not list, a redirect: ``location`` is its target).  ``items`` are
    the items as ``OUT/items`` stores them; ``follows`` what the callback yielded with
    ``response.follow``; ``links`` the URLs the crawl would queue from the page (follows first,
    canonical, in scope); ``traceback`` the callback's when it raised; ``rendered``: the
    callback and links saw the DOM a browser rendered (``render=True``, ``render_include``,
    the spider's ``render``), with its PNG in ``screenshot`` when asked for."""

    url: str
    callback: str
    status: int | None = None
    content_type: str | None = None
    error: str | None = None
    detail: str | None = None
    location: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    traceback: str | None = None
    rendered: bool = False
    screenshot: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """The callback ran on the page and returned normally."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (bytes as text), as ``raycrawl parse --json`` prints them."""
        out = dataclasses.asdict(self)
        out["follows"] = [{k: msgpack.unpackb(v) if k == "render" else v
                           for k, v in dataclasses.asdict(f).items() if v is not None}
                          for f in self.follows]
        out["ok"] = self.ok
        out["screenshot"] = None if self.screenshot is None else len(self.screenshot)  # bytes
        return _plain(out)

    def text(self) -> str:
        """What ``raycrawl parse`` prints: the answer, the items, the follows, the links."""
        lines = [f"{self.url} -> {self.status if self.status is not None else 'no answer'}"
                 + (f" {self.content_type}" if self.content_type else "")
                 + f"  callback {self.callback}" + ("  (rendered)" if self.rendered else "")]
        if self.error is not None:
            lines.append(f"not parsed: {self.error}" + (f": {self.detail}" if self.detail else "")
                         + (f" (to {self.location})" if self.location else ""))
        lines.append(f"items ({len(self.items)}):")
        lines += [f"  {json.dumps(_plain(item), ensure_ascii=False)}" for item in self.items]
        lines.append(f"follows ({len(self.follows)}):")
        lines += [f"  {_follow_text(f)}" for f in self.follows]
        lines.append(f"links the crawl would queue ({len(self.links)}):")
        lines += [f"  {url}" for url in self.links]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        tb = (f"<pre style='color:#a00'>{html.escape(self.traceback)}</pre>"
              if self.traceback else "")
        return f"<pre>{html.escape(self.text())}</pre>{tb}"


def parse(url: str, spider: str | type[Spider], callback: str | None = None,
          meta: Mapping[str, Any] | None = None, **settings: Any) -> Parsed:
    """Fetch ``url`` the way a crawl does and run ``spider``'s ``callback`` (default
    ``parse``) on it, with ``meta`` as ``response.meta``; returns what it yielded.

    ``settings`` are :class:`~raycrawl.config.CrawlConfig` fields (``allow_network``,
    ``user_agent``, ``robots``, ``proxy``, ``include``...).  Raises
    :class:`~raycrawl.errors.ConfigError`, :class:`~raycrawl.errors.SpiderError` or
    :class:`~raycrawl.errors.InvalidURL` with one line for bad input; what happens to the URL
    (an answer, a refusal, a callback that raises) is in the result.  Works in a notebook
    (its event loop running) as in a script."""
    spec, code = spider_spec(spider)
    config = config_from_mapping({**settings, "spider": spec, "spider_code": code})
    cls = load_spider(spec, code, config.spider_source)
    name = callback or DEFAULT_CALLBACK
    if callback_of(cls, name) is None:
        raise SpiderError(f"spider {spec!r} has no callback {name!r}")
    request = _request(url, name, meta, config)
    try:
        instance = cls()
    except Exception as exc:  # the user's __init__
        raise SpiderError(f"spider {spec!r}: {cls.__name__}() raised "
                          f"{type(exc).__name__}: {exc}") from None
    runner = _Recorder(instance, config.callback_timeout_s, config.max_items_per_page,
                       config.max_links_per_page)
    try:
        result = _run(_fetch(request, FetchOptions.from_config(config), runner))
    finally:
        runner.close()
    return _parsed(request, name, result, runner)


def _request(url: str, callback: str, meta: Mapping[str, Any] | None,
             config: CrawlConfig) -> FetchRequest:
    info = url_info(url, config.partitions)
    if meta is not None and not isinstance(meta, Mapping):
        raise ConfigError(f"meta must be a mapping (a JSON object), not {type(meta).__name__}")
    try:
        packed = pack_meta(dict(meta or {}))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"meta cannot be carried: {exc}") from None
    return FetchRequest(info.url, info.fingerprint, info.host, info.partition, 0,
                        delay_s=0.0, robots_needed=config.robots, callback=callback, meta=packed)


async def _fetch(request: FetchRequest, opts: FetchOptions, runner: CallbackRunner
                 ) -> FetchResult:
    parts = [part async for _, part in fetch_hosts(FetchRequest.to_batch([request]), opts,
                                                   callbacks=runner)]
    return FetchResult.concat(parts)


def _run(coro: Coroutine[Any, Any, FetchResult]) -> FetchResult:
    """``coro`` to its end: on this thread, or on one of its own when an event loop runs here
    (a notebook's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _Recorder(CallbackRunner):
    """Runs the callback as a crawl does, keeping whether it ran, what it yielded and its
    traceback."""

    def __init__(self, spider: Spider, timeout_s: float, max_items: int,
                 max_follows: int) -> None:
        super().__init__(spider, timeout_s, max_items, max_follows)
        self.ran = False
        self.follows: list[Follow] = []
        self.traceback: str | None = None

    async def run(self, callback: str | None, response: SpiderResponse) -> Outcome:
        self.ran = True
        outcome = await super().run(callback, response)
        self.follows = list(outcome.follows)
        return outcome

    def _log(self, name: str, response: SpiderResponse, exc: BaseException) -> None:
        self.traceback = "".join(traceback.format_exception(exc))


def _parsed(request: FetchRequest, callback: str, result: FetchResult,
            runner: _Recorder) -> Parsed:
    pages = FetchOutcome.from_batch(result.pages)
    if not pages:  # robots.txt could not be read: a crawl would try the URL again later
        robots = RobotsFetch.from_batch(result.robots)
        why = (robots[0].error or f"status {robots[0].status}") if robots else "no answer"
        return Parsed(request.url, callback, error=str(ErrorKind.ROBOTS_UNAVAILABLE),
                      detail=f"its robots.txt could not be read ({why})")
    page = pages[0]
    error, detail = (str(page.error), page.error_detail) if page.error is not None else (None, None)
    if error == ErrorKind.BLOCKED_ADDRESS:
        detail = (f"the address guard refuses {request.host}'s address: allow its network "
                  "with --allow-network CIDR (allow_network)")
    elif error is None and not runner.ran:  # an answer a callback does not get
        error = f"http-{page.status}"
        detail = ("a callback gets 2xx answers and those its spider's handle_status lists"
                  + ("; a redirect's target is a URL of its own" if page.location else ""))
    items = [msgpack.unpackb(raw) for raw in result.items.column("item").to_pylist()]
    links = [row.url for row in LinkFound.from_batch(result.links)]
    return Parsed(request.url, callback, page.status, page.content_type, error, detail,
                  page.location, items, runner.follows if error is None else [], links,
                  runner.traceback, bool(page.rendered), page.screenshot)


def _follow_text(f: Follow) -> str:
    extra = {k: v for k, v in (("callback", f.callback), ("meta", f.meta),
                               ("priority", f.priority), ("age_s", f.age_s),
                               ("render", None if f.render is None else
                                msgpack.unpackb(f.render)))
             if v is not None}
    method = "" if f.method == "GET" else f"{f.method} "
    return method + f.url + "".join(f"  {k}={json.dumps(_plain(v))}" for k, v in extra.items())


def _plain(value: Any) -> Any:
    """``value`` with bytes as text and tuples as lists (for JSON)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
