"""raycrawl: a distributed crawl frontier and crawler on Ray.

The names below are imported when first used (PEP 562): an actor process imports the package
for its own role's modules, and should not pay for the rest (the driver's API, the fetch path,
the browser, the debugger) at its start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "Crawl": "raycrawl.api",
    "CrawlConfig": "raycrawl.config",
    "Parsed": "raycrawl.debugger",
    "parse": "raycrawl.debugger",
    **dict.fromkeys(("ConfigError", "CrawlStateError", "DecodeError", "InvalidURL",
                     "RaycrawlError", "SeedError", "SpiderError", "StrategyError"),
                    "raycrawl.errors"),
    "read_items": "raycrawl.formats.items",
    **dict.fromkeys(("Request", "Response", "URLState"), "raycrawl.models"),
    "read_pages": "raycrawl.output.durable",
    **dict.fromkeys(("Follow", "Spider", "SpiderResponse"), "raycrawl.spider"),
    "CrawlingStrategy": "raycrawl.strategy",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'raycrawl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it without this hook
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
