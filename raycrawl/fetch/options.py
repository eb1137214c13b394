"""What a fetch worker needs of the crawl's config: small, frozen, shipped to every worker."""

from __future__ import annotations

from dataclasses import dataclass

from raycrawl.config import CrawlConfig
from raycrawl.render.spec import RenderRule
from raycrawl.scope import Scope


@dataclass(frozen=True)
class FetchOptions:
    """The fetch side of :class:`~raycrawl.config.CrawlConfig` (same names and meanings;
    ``concurrency`` is ``fetch_concurrency``)."""

    concurrency: int
    per_host: int
    connect_timeout_s: float
    read_timeout_s: float
    total_timeout_s: float
    max_body_bytes: int
    max_links_per_page: int
    max_url_length: int
    max_redirects: int
    partitions: int
    user_agent: str
    allow_network: tuple[str, ...]
    state_dir: str = ""
    link_parser: str = "lexbor"
    spider: str | None = None
    spider_source: str | None = None
    spider_code: str | None = None
    callback_timeout_s: float = 10.0
    max_items_per_page: int = 1000
    scope: Scope = Scope()
    cookies: bool = False
    sitemaps: bool = False  # read the sitemaps robots.txt files name
    proxy: str | None = None
    warc_dir: str | None = None  # None: no WARC
    warc_max_bytes: int = 256 * 1024 * 1024
    per_ip: int | None = None  # requests at once to one IP address (raycrawl.fetch.limits)
    robots_timeout_s: float = 10.0
    auto_throttle: bool = False  # a host's delay follows its response times (limits.throttled)
    render: RenderRule = RenderRule()  # the URLs rendered by the crawl's flags (raycrawl.render)
    browser_path: str | None = None
    render_memory_mb: int = 1024
    browser_restart_pages: int = 200
    render_concurrency: int = 4

    @classmethod
    def from_config(cls, c: CrawlConfig) -> FetchOptions:
        return cls(
            concurrency=c.fetch_concurrency, per_host=c.per_host,
            connect_timeout_s=c.connect_timeout_s, read_timeout_s=c.read_timeout_s,
            total_timeout_s=c.total_timeout_s, max_body_bytes=c.max_body_bytes,
            max_links_per_page=c.max_links_per_page, max_url_length=c.max_url_length,
            max_redirects=c.max_redirects, partitions=c.partitions, user_agent=c.user_agent,
            allow_network=c.allow_network,
            state_dir=c.state_dir, link_parser=c.link_parser, spider=c.spider,
            spider_source=c.spider_source, spider_code=c.spider_code,
            callback_timeout_s=c.callback_timeout_s,
            max_items_per_page=c.max_items_per_page,
            scope=Scope.build(c.allow_domain, c.include, c.exclude),
            warc_dir=c.warc_dir if c.warc else None, warc_max_bytes=c.warc_max_bytes,
            cookies=c.cookies, proxy=c.proxy, sitemaps=c.sitemaps, per_ip=c.per_ip,
            robots_timeout_s=c.robots_timeout_s, auto_throttle=c.auto_throttle,
            render=c.render_rule, browser_path=c.browser_path,
            render_memory_mb=c.render_memory_mb, browser_restart_pages=c.browser_restart_pages,
            render_concurrency=c.render_concurrency)
