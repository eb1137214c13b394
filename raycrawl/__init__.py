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
    StrategyError,
)
from raycrawl.models import Request, Response, URLState
from raycrawl.strategy import CrawlingStrategy

__all__ = [
    "ConfigError",
    "Crawl",
    "CrawlConfig",
    "CrawlStateError",
    "CrawlingStrategy",
    "DecodeError",
    "InvalidURL",
    "RaycrawlError",
    "Request",
    "Response",
    "SeedError",
    "StrategyError",
    "URLState",
]
__version__ = "0.1.0"
