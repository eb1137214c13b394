"""raycrawl: a distributed crawl frontier and crawler on Ray."""

from raycrawl.api import Crawl
from raycrawl.config import CrawlConfig
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
from raycrawl.models import Request, Response, URLState
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
    "RaycrawlError",
    "Request",
    "Response",
    "SeedError",
    "Spider",
    "SpiderError",
    "SpiderResponse",
    "StrategyError",
    "URLState",
]
__version__ = "0.1.0"
