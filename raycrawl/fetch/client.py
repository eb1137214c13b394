"""The HTTP client of fetch workers: the session, the one mapping of its errors to error kinds,
bodies read under a cap, Retry-After."""

from __future__ import annotations

import asyncio
import zlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from raycrawl.errors import ErrorKind, InvalidURL
from raycrawl.fetch.decoding import ACCEPT_ENCODING, BodyDecoder, UnsupportedEncoding
from raycrawl.fetch.netguard import AddressGuard, BlockedAddress, GuardedResolver
from raycrawl.fetch.options import FetchOptions

KEEPALIVE_S = 5.0  # idle connections kept between batches (below common server timeouts)


def open_session(opts: FetchOptions) -> aiohttp.ClientSession:
    """The HTTP client of fetch workers: timeouts, the address guard at resolution time, no
    cookies (a crawl that keeps them sends each host's own, see ``cookies.load_cookies``), no
    automatic decompression (``BodyDecoder`` caps it), every request through ``opts.proxy``
    when set.  Call inside a running
    event loop; the session may serve many batches of the same options."""
    timeout = aiohttp.ClientTimeout(total=opts.total_timeout_s or None,
                                    sock_connect=opts.connect_timeout_s or None,
                                    sock_read=opts.read_timeout_s or None)
    guard = AddressGuard(opts.allow_network)
    connector = aiohttp.TCPConnector(limit=opts.concurrency, resolver=GuardedResolver(guard),
                                     ttl_dns_cache=60, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False,
        headers={"User-Agent": opts.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
        cookie_jar=aiohttp.DummyCookieJar(), proxy=opts.proxy)


def error_kind(exc: BaseException) -> ErrorKind:
    """The one place where aiohttp's and the OS's errors become error kinds; anything else is
    not a per-URL failure but a bug, and is raised again."""
    if isinstance(exc, BlockedAddress):
        return ErrorKind.BLOCKED_ADDRESS
    if isinstance(exc, aiohttp.ClientConnectorError):
        blocked = isinstance(exc.os_error, BlockedAddress)
        return ErrorKind.BLOCKED_ADDRESS if blocked else ErrorKind.CONNECTION
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ErrorKind.TIMEOUT
    if isinstance(exc, (aiohttp.InvalidURL, InvalidURL)):
        return ErrorKind.INVALID_URL
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError,
                        aiohttp.ServerDisconnectedError, UnicodeError, UnsupportedEncoding,
                        zlib.error)):
        return ErrorKind.BAD_RESPONSE
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return ErrorKind.CONNECTION
    raise exc  # not a per-URL failure: a bug that must surface


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The decoded body, stopping once it exceeds ``limit``; returns (body, too_large)."""
    declared, encoding = resp.content_length, resp.headers.get("Content-Encoding")
    if declared is not None and not encoding:
        if declared > limit:
            return b"", True
        # A plain body of a declared length within the cap: read at once (aiohttp reads no
        # more than the length); the chunk loop cost 15 µs more a small page.
        return await resp.read(), False
    decoder = BodyDecoder(encoding, limit)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += decoder.feed(chunk)
        if decoder.over_limit:
            return bytes(body[:limit]), True
    return bytes(body), False
