"""The one configuration object of a crawl.

Defaults live here and nowhere else.  CLI flags and TOML keys map onto :class:`CrawlConfig`
fields by name (``--max-pages`` and ``max_pages``/``max-pages`` all mean ``max_pages``); a value
is validated once, in ``__post_init__``, with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from raycrawl.errors import ConfigError
from raycrawl.render.spec import RenderRule, RenderSpec, RenderSpecError
from raycrawl.scope import Scope
from raycrawl.storage.location import is_local

CODECS = ("msgpack", "json")
LINK_PARSERS = ("lexbor", "parsel")  # the names raycrawl.fetch.extract knows


@dataclass(frozen=True)
class CrawlConfig:
    """Everything a crawl needs to run; frozen, so every actor sees the same values.

    Units are in the names: ``*_s`` seconds, ``*_bytes`` bytes.
    """

    seeds: tuple[str, ...] = ()
    seeds_file: str | None = None
    out: str = "out"
    state: str | None = None  # defaults to OUT/state
    crawl_id: str = ""  # generated when empty
    max_pages: int | None = None
    max_depth: int | None = None
    strategy: str = "bfs"
    partitions: int = 256
    strategy_workers: int = 1
    db_workers: int = 1
    fetch_concurrency: int = 32  # requests in flight per fetch worker (its batches share them)
    delay_s: float = 1.0  # between two request starts to one host
    per_host: int = 1  # requests in flight per host, cluster-wide
    robots: bool = True
    allow_network: tuple[str, ...] = ()
    address: str | None = None
    codec: str = "msgpack"  # encoding of the stream files written with log_streams
    link_parser: str = "lexbor"  # HTML parser of link extraction: lexbor or parsel
    log_streams: bool = False  # write the spider log to OUT/streams in Frontera's protocol
    user_agent: str = "raycrawl/0.1 (+https://github.com/raycrawl/raycrawl)"
    # URLs per spider-feed batch.  A batch has a fixed cost (about five actor calls, a
    # hand-over, a write), so it is large: 512 and 32 a host gave small pages 1.2-1.4x the
    # pages/s of 128 and 8 (benchmarks/README.md, stop 41).
    batch_size: int = 512
    # URLs of one host per batch, at most; fewer where the host's delay would hold it longer
    # than HOST_RUN_S (raycrawl.db_worker.politeness): 8 at the default 1 s delay.
    host_batch_cap: int = 32
    # Batches fetching at once per DB worker, three per fetch worker (as many more batches may
    # be handing over their spider log); None: three per fetch worker of the DB worker's part of
    # the crawl's share of the cluster's CPUs (see raycrawl.coordinator.sharing).
    batches_in_flight: int | None = None
    # Fetch workers (one CPU each) this crawl may hold at most; None: as many as its fair share
    # of the cluster's CPUs (see raycrawl.coordinator.sharing).
    fetch_workers: int | None = None
    # Ask the cluster's autoscaler for CPUs when the crawl's ready work wants more fetch
    # workers than the cluster has, up to this many (None: never ask; see
    # raycrawl.coordinator.sharing.scale_to).
    max_fetch_workers: int | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 60.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_links_per_page: int = 2000
    max_url_length: int = 2048
    output_rows_per_file: int = 20_000
    output_flush_s: float = 10.0  # flush buffered output rows at least this often
    poll_interval_s: float = 0.2  # coordinator reconcile period
    # A call to another actor that does not return within this fails (an infrastructure fault:
    # its work runs again), and an actor that does not answer its owner within it is replaced.
    actor_timeout_s: float = 60.0
    linger_s: float = 300.0  # an ended crawl's actors wait this long for a driver, then exit
    # Checkpoint every store to OUT/_checkpoints this often (0: never); a lost store is then
    # restored from the last one (raycrawl.storage.checkpoints).
    checkpoint_every_s: float = 300.0
    # A URL fetched alone may kill its fetch worker fetch_retries + 1 times before it ends as
    # fetch-task-failed, and be in flight at fetch_retries DB worker deaths before quarantined.
    fetch_retries: int = 2
    retries: int = 2  # more attempts for a URL after a timeout, connection error, 429 or 5xx
    retry_backoff_s: float = 2.0  # host backoff before attempt n+1: retry_backoff_s * 2**n
    max_backoff_s: float = 600.0  # cap of a failing host's exponential backoff
    max_retry_after_s: float = 600.0  # cap of a 429/503 Retry-After
    host_park_after: int = 5  # failing batches in a row, then park
    robots_ttl_s: float = 86_400.0  # how long a robots.txt stays cached
    # An unreachable robots.txt (5xx, timeout, refused, reset) means "disallow all" for now
    # (RFC 9309): it is tried again after robots_retry_s, doubling each time, until
    # robots_give_up_s after its first failure; then the host's URLs end as robots-unavailable.
    robots_retry_s: float = 2.0
    robots_give_up_s: float = 60.0
    robots_timeout_s: float = 10.0  # one robots.txt request's total time
    max_redirects: int = 10  # hops of one redirect chain
    max_segment_repeats: int = 3  # a path segment repeated more often marks a trap
    # Of the URLs of one host and template (path with numbers, dates and hex ids folded, plus
    # query keys) found two or more steps along a chain of pages each linking at most two of
    # their template (a calendar), this many are scheduled; the rest are traps (None: no limit).
    # See raycrawl.strategy_worker.traps.
    max_template_chain: int | None = 50
    # Backstops, high by default (as signals they cut big sites as readily as traps): URLs per
    # (host, path, query keys), and per (host, path template), before the next is a trap; they
    # bound a trap the chain rule does not see (a calendar linking four dates of its own a page).
    max_query_variants: int | None = 100_000
    max_path_variants: int | None = 100_000
    max_path_segments: int = 32  # a path with more segments is a trap
    max_pages_per_host: int | None = None  # URLs scheduled per host
    # Host changes on the path from a seed host to a URL before it is a trap (None: no limit):
    # generated subdomains, link farms; a link to a seed's host counts 0 again.
    max_host_hops: int | None = None
    # Requests at once to one IP address per fetch worker, whatever their hosts (None: no
    # limit beyond per_host): virtual hosts of one server share it (see raycrawl.fetch.limits).
    per_ip: int | None = None
    # The crawl's rate and burst, beside the per-host limits: at most ``burst`` fetches at once
    # beyond ``max_pages_per_s`` a second, over every DB worker together (a token bucket split
    # between them, see raycrawl.db_worker.ratelimit).  None: no limit; burst None: one
    # second's worth.  Flags --max-rate and --burst.
    max_pages_per_s: float | None = None
    burst: int | None = None
    # A host's delay follows its response times, never below delay_s (see
    # raycrawl.db_worker.politeness.HostSlots).
    auto_throttle: bool = False
    # The spider: FILE.py:Class or package.module:Class (see raycrawl.spider).  Set by the
    # driver for the workers: spider_source, the text of a FILE.py; spider_code, a class of
    # __main__ pickled by Crawl(spider=cls).
    spider: str | None = None
    spider_source: str | None = None
    spider_code: str | None = None
    callback_timeout_s: float = 10.0  # a callback running longer ends its page (callback-error)
    max_items_per_page: int = 1000  # items one callback may yield
    # Scope of the links followed: these domains and their subdomains (none: any), URLs that
    # match an include pattern (none: any) and no exclude pattern.
    allow_domain: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Keep the cookies each host sets and send them back to it (per host, in the DB worker's
    # store, so they survive restarts); off: no cookies, as robots-friendly crawlers do.
    cookies: bool = False
    proxy: str | None = None  # an http:// proxy URL every request goes through
    warc: bool = False  # write every response to OUT/warc as WARC/1.1 (see raycrawl.formats.warc)
    warc_max_bytes: int = 256 * 1024 * 1024  # a fetch worker starts a new WARC file past this
    # Sync the RocksDB writes a worker acknowledges to another to disk (fsync through the WAL).
    # Off, they survive a crashed or killed process but not a crashed machine: for ephemeral
    # disks, and to measure what durability costs (benchmarks/README.md, step 17).
    sync_writes: bool = True
    # Revisits (see raycrawl.db_worker.revisits): a fetched URL is due again this long after its
    # fetch (None: each URL is fetched once).  Such a crawl ends at run_for_s, a stop or
    # max_pages fetches, not on an empty queue.
    recrawl_after_s: float | None = None
    run_for_s: float | None = None  # end the crawl (finished) this long after it began running
    adaptive: bool = False  # shrink a URL's interval when its page changed, grow it when not
    recrawl_min_s: float | None = None  # adaptive bounds; default a tenth of recrawl_after_s
    recrawl_max_s: float | None = None  # ... and ten times it
    adaptive_grow: float = 1.4  # an unchanged revisit lengthens the interval this much
    adaptive_shrink: float = 0.8  # a changed one shortens it this much
    reseed_every_s: float | None = None  # revisit the seeds this often (pyspider's @every)
    sitemaps: bool = False  # add the URLs of the sitemaps that robots.txt files name
    # JavaScript rendering by headless Chromium (see raycrawl.render): every page (render),
    # pages whose canonical URL matches a render_include pattern, besides a spider's render
    # attribute and a follow's render=.  How a page is rendered: wait for a load state, then
    # a selector, run a script, within render_timeout_s, a PNG with screenshot.  The browsers:
    # Chromium's executable (default: found on PATH), memory reserved per browser (one per
    # fetch worker), pages before a browser is replaced, pages at once per browser.
    render: bool = False
    render_include: tuple[str, ...] = ()
    render_wait: str = "load"
    render_wait_for: str | None = None
    render_script: str | None = None
    render_timeout_s: float = 30.0
    screenshot: bool = False
    browser_path: str | None = None
    render_memory_mb: int = 1024
    browser_restart_pages: int = 200
    render_concurrency: int = 4

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        for name in ("partitions", "strategy_workers", "db_workers", "fetch_concurrency",
                     "per_host", "batch_size", "host_batch_cap",
                     "max_body_bytes", "max_links_per_page", "max_url_length",
                     "output_rows_per_file", "host_park_after", "max_redirects",
                     "max_items_per_page", "warc_max_bytes",
                     "max_segment_repeats", "max_path_segments", "render_memory_mb",
                     "browser_restart_pages", "render_concurrency"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                  name, "must be an integer >= 1")
        for name in ("max_pages", "max_depth", "max_pages_per_host", "max_host_hops"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and not isinstance(value, bool)
                                    and value >= 0), name, "must be an integer >= 0")
        for name in ("batches_in_flight", "fetch_workers", "max_fetch_workers", "per_ip",
                     "max_template_chain", "max_query_variants", "max_path_variants"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and not isinstance(value, bool)
                                    and value >= 1), name,
                  "must be an integer >= 1 (or unset: automatic)")
        for name in ("delay_s", "connect_timeout_s", "read_timeout_s", "total_timeout_s",
                     "output_flush_s", "poll_interval_s", "linger_s", "actor_timeout_s",
                     "checkpoint_every_s",
                     "retry_backoff_s",
                     "max_backoff_s", "max_retry_after_s", "robots_ttl_s", "robots_retry_s",
                     "robots_give_up_s", "robots_timeout_s", "callback_timeout_s"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                  name, "must be a number >= 0")
        check(self.actor_timeout_s > 0, "actor_timeout_s", "must be more than 0")
        for name in ("recrawl_after_s", "run_for_s", "recrawl_min_s", "recrawl_max_s",
                     "reseed_every_s"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, (int, float))
                                    and not isinstance(value, bool) and value > 0),
                  name, "must be a number of seconds > 0")
        check(self.max_pages_per_s is None or (
            isinstance(self.max_pages_per_s, (int, float))
            and not isinstance(self.max_pages_per_s, bool) and self.max_pages_per_s > 0),
            "max_pages_per_s", "must be a number of pages a second > 0")
        check(self.burst is None or (isinstance(self.burst, int)
                                     and not isinstance(self.burst, bool) and self.burst >= 1),
              "burst", "must be an integer >= 1")
        check(self.burst is None or self.max_pages_per_s is not None, "burst",
              "needs max_pages_per_s (--max-rate)")
        check(not self.adaptive or self.recrawl_after_s is not None, "adaptive",
              "needs recrawl_after_s (the interval it starts from)")
        check(isinstance(self.adaptive_grow, (int, float)) and self.adaptive_grow > 1,
              "adaptive_grow", "must be a number > 1")
        check(isinstance(self.adaptive_shrink, (int, float)) and 0 < self.adaptive_shrink < 1,
              "adaptive_shrink", "must be a number between 0 and 1")
        low, high = self.recrawl_bounds_s
        check(low <= high, "recrawl_min_s", "must not exceed recrawl_max_s")
        for name in ("fetch_retries", "retries"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                  name, "must be an integer >= 0")
        check(self.strategy_workers <= self.partitions, "strategy_workers",
              "cannot exceed the number of partitions")
        check(self.db_workers <= self.partitions, "db_workers",
              "cannot exceed the number of partitions")
        check(self.codec in CODECS, "codec", f"must be one of {', '.join(CODECS)}")
        check(self.link_parser in LINK_PARSERS, "link_parser",
              f"must be one of {', '.join(LINK_PARSERS)}")
        check(bool(self.out), "out", "must name a directory")
        check(is_local(self.out) or bool(self.state), "state",
              "is required with an --out URI: a node-local folder for the crawl's stores")
        check(isinstance(self.user_agent, str) and bool(self.user_agent.strip())
              and "\n" not in self.user_agent, "user_agent", "must be a non-empty single line")
        for cidr in self.allow_network:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"allow_network: not a CIDR range: {cidr!r}") from None
        check(self.proxy is None or (isinstance(self.proxy, str)
                                     and self.proxy.startswith(("http://", "https://"))
                                     and len(self.proxy) > 8),
              "proxy", "must be an http:// or https:// URL")
        check(self.callback_timeout_s > 0, "callback_timeout_s", "must be more than 0")
        Scope.build(self.allow_domain, self.include, self.exclude)  # raises on a bad pattern
        try:
            self.render_rule  # noqa: B018 (raises on a bad render option or pattern)
        except RenderSpecError as exc:
            raise ConfigError(str(exc)) from None
        check(self.spider is None or (isinstance(self.spider, str) and ":" in self.spider),
              "spider", "must be FILE.py:Class or package.module:Class")
        if not self.crawl_id:
            object.__setattr__(self, "crawl_id", f"crawl-{uuid.uuid4().hex[:8]}")
        check("/" not in self.crawl_id and self.crawl_id.strip() == self.crawl_id,
              "crawl_id", "must not contain '/' or surrounding spaces")

    @property
    def state_dir(self) -> str:
        """Where the crawl's manifest and RocksDB stores live (``OUT/state`` by default)."""
        return self.state or os.path.join(self.out, "state")

    @property
    def revisits(self) -> bool:
        """The crawl revisits what it fetched, so an empty queue does not end it."""
        return self.recrawl_after_s is not None or self.reseed_every_s is not None

    @property
    def recrawl_bounds_s(self) -> tuple[float, float]:
        """(recrawl_min_s, recrawl_max_s) with their defaults filled in."""
        after = self.recrawl_after_s or 0.0
        low = self.recrawl_min_s if self.recrawl_min_s is not None else after / 10
        high = self.recrawl_max_s if self.recrawl_max_s is not None else max(after * 10, low)
        return low, high

    @property
    def revisit_floor_s(self) -> float | None:
        """The shortest interval the crawl revisits a URL after (None: it does not revisit)."""
        floors = [x for x in (self.recrawl_after_s and (self.recrawl_bounds_s[0]
                                                        if self.adaptive else self.recrawl_after_s),
                              self.reseed_every_s) if x]
        return min(floors) if floors else None

    @property
    def render_rule(self) -> RenderRule:
        """Which URLs the crawl renders by its flags, and how (a spider may add to it)."""
        return RenderRule(self.render, self.render_include, RenderSpec(
            self.render_wait, self.render_wait_for, self.render_script,
            self.render_timeout_s, self.screenshot))

    @property
    def pages_dir(self) -> str:
        """The ``OUT/pages`` Parquet dataset."""
        return os.path.join(self.out, "pages")

    @property
    def warc_dir(self) -> str:
        """The ``OUT/warc`` folder (``--warc``)."""
        return os.path.join(self.out, "warc")

    @property
    def items_dir(self) -> str:
        """The ``OUT/items`` Parquet dataset (a spider's items)."""
        return os.path.join(self.out, "items")

    def replace(self, **changes: Any) -> CrawlConfig:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the manifest and for TOML/JSON round trips."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


# A render spec's options (a spider's ``render`` dict) as the crawl's settings.
RENDER_FIELDS = {"wait": "render_wait", "wait_for": "render_wait_for",
                 "script": "render_script", "timeout_s": "render_timeout_s",
                 "screenshot": "screenshot"}


def render_settings(render: bool | Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a spider's ``render`` attribute (True, or a dict of options)."""
    settings: dict[str, Any] = {"render": True}
    if isinstance(render, Mapping):
        try:
            RenderSpec().overlay(render)
        except RenderSpecError as exc:
            raise ConfigError(f"the spider's render: {exc}") from None
        settings.update({RENDER_FIELDS[k]: v for k, v in render.items()})
    return settings


FIELD_NAMES = frozenset(f.name for f in fields(CrawlConfig))
# Fields earlier versions wrote into a state folder's manifest and this one ignores there
# (``crash_points``: fault injection is a hook now, ``raycrawl.faultpoints``).
RETIRED_FIELDS = frozenset({"crash_points"})
_TUPLE_FIELDS = frozenset(f.name for f in fields(CrawlConfig) if "tuple" in str(f.type))
# Flags whose name differs from the field (``--delay`` sets ``delay_s``).
ALIASES = {"delay": "delay_s", "no_robots": "robots", "recrawl_after": "recrawl_after_s",
           "run_for": "run_for_s", "reseed_every": "reseed_every_s",
           "recrawl_min": "recrawl_min_s", "recrawl_max": "recrawl_max_s",
           "max_rate": "max_pages_per_s", "render_timeout": "render_timeout_s",
           "browser": "browser_path", "render_memory": "render_memory_mb"}


def normalise_key(key: str) -> str:
    """Map a flag or TOML spelling (``max-pages``, ``delay``) to its field name."""
    name = key.strip().lstrip("-").replace("-", "_")
    return ALIASES.get(name, name)


def config_from_mapping(values: dict[str, Any]) -> CrawlConfig:
    """Build a config from field names or their flag/TOML spellings; unknown keys are errors."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = normalise_key(key)
        if name not in FIELD_NAMES:
            raise ConfigError(f"unknown setting {key!r}")
        if key.lstrip("-").replace("-", "_") == "no_robots":
            value = not value
        if name in _TUPLE_FIELDS:
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name}: must be a list")
            value = tuple(value)
        kwargs[name] = value
    try:
        return CrawlConfig(**kwargs)
    except TypeError as exc:  # a wrongly typed value the dataclass cannot take
        raise ConfigError(str(exc)) from None


def read_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file; settings may sit at the top level or under ``[crawl]``."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = data.get("crawl", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [crawl] must be a table")
    return dict(table)
