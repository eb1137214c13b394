"""raycrawl: a distributed crawl frontier and crawler on Ray."""

from .api import Crawl
from .config import CrawlConfig
from .errors import (
    ConfigError,
    CrawlStateError,
    DecodeError,
    InvalidURL,
    RaycrawlError,
    SeedError,
    StrategyError,
)
from .models import Request, Response, URLState
from .strategy import CrawlingStrategy

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
