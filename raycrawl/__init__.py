"""raycrawl: a distributed crawl frontier and crawler on Ray."""

from raycrawl.api import Crawl
from raycrawl.config import CrawlConfig
from raycrawl.debugger import Parsed, parse
from raycrawl.errors import (
    ConfigError,
    CrawlStateError,
    DecodeError,
    InvalidURL,
    RaycrawlError,
    SeedError,
    SpiderError,
    StrategyError,
)
from raycrawl.formats.items import read_items
from raycrawl.models import Request, Response, URLState
from raycrawl.output.durable import read_pages
from raycrawl.spider import Follow, Spider, SpiderResponse
from raycrawl.strategy import CrawlingStrategy

__all__ = [
    "ConfigError",
    "Crawl",
    "CrawlConfig",
    "CrawlStateError",
    "CrawlingStrategy",
    "DecodeError",
    "Follow",
    "InvalidURL",
    "Parsed",
    "RaycrawlError",
    "Request",
    "Response",
    "SeedError",
    "Spider",
    "SpiderError",
    "SpiderResponse",
    "StrategyError",
    "URLState",
    "parse",
    "read_items",
    "read_pages",
]
__version__ = "0.1.0"
