"""The one error tree of raycrawl.

::

    RaycrawlError                 base of everything raycrawl raises on purpose
    ├── ConfigError               a bad flag, TOML key or value (raised by config.py, cli.py)
    ├── SeedError                 an unreadable seeds file or an invalid seed URL (cli.py, api.py)
    ├── InvalidURL                a URL that cannot be canonicalised (urls.py)
    ├── DecodeError               a malformed, unknown or oversized codec message (codecs/)
    ├── StrategyError             a strategy name that does not load (strategy.py)
    └── CrawlStateError           a state directory that holds no crawl, or a call in the wrong
                                  lifecycle phase (api.py, actors/)

Expected per-URL failures (404, timeout, too large, refused address) are not exceptions: they
are values in the spider-log batch (the ``error`` column), see ``ErrorKind`` below.
"""

from __future__ import annotations


class RaycrawlError(Exception):
    """Base class of every error raycrawl raises on purpose."""


class ConfigError(RaycrawlError, ValueError):
    """A configuration value, CLI flag or TOML key is invalid."""


class SeedError(RaycrawlError, ValueError):
    """A seeds file cannot be read, or a seed is not a crawlable URL."""


class InvalidURL(RaycrawlError, ValueError):
    """A URL cannot be parsed or is not http/https."""


class DecodeError(RaycrawlError, ValueError):
    """A codec message is malformed, of an unknown type or larger than allowed."""


class StrategyError(RaycrawlError):
    """A crawling strategy cannot be loaded by the name given."""


class CrawlStateError(RaycrawlError):
    """A state directory holds no crawl, or a control call came in the wrong phase."""
