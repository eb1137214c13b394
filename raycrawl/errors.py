"""The one error tree of raycrawl.

::

    RaycrawlError                 base of everything raycrawl raises on purpose
    ├── ConfigError               a bad flag, TOML key or value (raised by config.py, cli.py)
    ├── SeedError                 an unreadable seeds file or an invalid seed URL (cli.py, api.py)
    ├── InvalidURL                a URL that cannot be canonicalised (urls.py)
    ├── DecodeError               a malformed, unknown or oversized codec message (codecs/)
    ├── StrategyError             a strategy name that does not load (strategy.py)
    ├── SpiderError               a spider that does not import or is not a Spider (spider.py)
    ├── CrawlStateError           a state directory that holds no crawl, or a call in the wrong
    │                             lifecycle phase (api.py, actors/)
    ├── StorageError              a store or output file could not be read or written (a full
    │                             disk, an I/O error): the crawl ends, the store named
    │                             (storage/store.py, output/durable.py)
    └── CrawlUnavailable          the crawl's coordinator does not answer, even after it was
                                  replaced (actors/handles.py, api.py); not bad input

Expected per-URL failures (404, timeout, too large, refused address) are not exceptions: they
are values in the spider-log batch and in ``OUT/pages`` (the ``error`` column): the kinds of
:class:`ErrorKind`, the one list of them (the README's table is checked against it).
"""

from __future__ import annotations

import enum


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


class SpiderError(RaycrawlError):
    """A spider file or module does not import, or names no ``raycrawl.Spider`` subclass."""


class CrawlStateError(RaycrawlError):
    """A state directory holds no crawl, or a control call came in the wrong phase."""


class StorageError(RaycrawlError):
    """A RocksDB store or an output file failed; the message names it."""


class CrawlUnavailable(RaycrawlError):
    """The crawl's coordinator does not answer (it hung or its cluster is gone)."""


class ErrorKind(enum.StrEnum):
    """Why a URL ended without a usable page: the ``error`` column of ``OUT/pages``.

    A member is its string (``ErrorKind.TIMEOUT == "timeout"``), so rows, counters and JSON hold
    plain words.  :attr:`retryable` kinds get another attempt (``retries``) and back the host off;
    :attr:`fetched` kinds come from a request the crawler sent (they count as an attempt and say
    something of the host's health); the others ended the URL before any request.
    """

    # connect, read or total timeout; a drip cut off after the status came is not retried
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, unreachable, DNS failure
    BLOCKED_ADDRESS = "blocked-address"  # the address guard refused the host's address
    TOO_LARGE = "too-large"  # the (decoded) body exceeded max_body_bytes (status kept)
    BAD_RESPONSE = "bad-response"  # the server broke HTTP or sent an encoding we do not decode
    BAD_REDIRECT = "bad-redirect"  # a 3xx whose Location cannot be resolved (status kept)
    REDIRECT_LOOP = "redirect-loop"  # a 3xx back into its own redirect chain (status kept)
    TOO_MANY_REDIRECTS = "too-many-redirects"  # a chain longer than max_redirects (status kept)
    INVALID_URL = "invalid-url"  # the URL could not be requested
    ROBOTS = "robots"  # robots.txt disallows the URL; not fetched
    # robots.txt answered 5xx or not at all for robots_give_up_s
    ROBOTS_UNAVAILABLE = "robots-unavailable"
    HOST_UNREACHABLE = "host-unreachable"  # the host was parked after failing batches in a row
    TRAP = "trap"  # a crawler-trap URL shape (repeated segments, query variants)
    HOST_BUDGET = "host-budget"  # over max_pages_per_host
    FETCH_TASK_FAILED = "fetch-task-failed"  # fetched alone, the URL killed its fetch worker
    QUARANTINED = "quarantined"  # in flight at fetch_retries deaths of its DB worker
    INTERNAL_ERROR = "internal-error"  # its batch kept failing in raycrawl itself
    CALLBACK_ERROR = "callback-error"  # the spider's callback raised, yielded junk or ran too long
    BAD_SITEMAP = "bad-sitemap"  # a sitemap that is not one (not its XML, bad gzip; status kept)
    # a rendered page did not reach its wait (load state, wait_for selector) in its render
    # timeout (status kept)
    RENDER_TIMEOUT = "render-timeout"
    # the render's script or the page failed, or no browser could start (status kept, detail)
    RENDER_ERROR = "render-error"

    @property
    def retryable(self) -> bool:
        """Worth another attempt, after a backoff: the cause may pass."""
        return self in _RETRYABLE

    @property
    def fetched(self) -> bool:
        """The crawler sent (or tried to send) a request for the URL itself."""
        return self not in _NOT_FETCHED


def retryable(kind: ErrorKind | None, status: int | None) -> bool:
    """A fetch that gets another attempt: a timeout or connection error, a 429 or 5xx.  Not a
    timeout after the status came: the server answers, too slowly to finish the body (a
    drip), and would do it again; the page ends with its status and error ``timeout``."""
    if kind is None:
        return status in RETRYABLE_STATUS
    return kind.retryable and not (kind is ErrorKind.TIMEOUT and status is not None)


RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRYABLE = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION})
_NOT_FETCHED = frozenset({
    ErrorKind.BLOCKED_ADDRESS, ErrorKind.ROBOTS, ErrorKind.ROBOTS_UNAVAILABLE,
    ErrorKind.HOST_UNREACHABLE, ErrorKind.TRAP, ErrorKind.HOST_BUDGET,
    ErrorKind.FETCH_TASK_FAILED, ErrorKind.QUARANTINED, ErrorKind.INTERNAL_ERROR})
