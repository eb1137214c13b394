"""Reading an origin's robots.txt the way RFC 9309 asks: redirects by hand, each hop guarded."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp
import yarl

from raycrawl.db_worker.robots import MAX_ROBOTS_BYTES, MAX_ROBOTS_REDIRECTS
from raycrawl.errors import ErrorKind
from raycrawl.fetch.client import error_kind, read_body
from raycrawl.fetch.limits import RequestLimit
from raycrawl.fetch.netguard import AddressGuard


async def fetch_robots(session: aiohttp.ClientSession, guard: AddressGuard,
                       limit: RequestLimit, origin: str, timeout_s: float | None = None
                       ) -> tuple[int | None, bytes, ErrorKind | None]:
    """(status, body, error kind) of ``origin``'s robots.txt.  Redirects are followed by hand,
    at most 5, each hop through the address guard; after the fifth the last 3xx stands, which
    reads as "unavailable": allow all.  So does a redirect that cannot be followed: to a URL
    no client can request (a bad port) or to an address the guard refuses.  Each request
    takes at most ``timeout_s`` (the session's timeouts when None).  The body is capped at
    ``MAX_ROBOTS_BYTES``."""
    status: int | None = None
    body = b""
    error: ErrorKind | None = None
    url = origin + "/robots.txt"
    timeout = None if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
    for hop in range(MAX_ROBOTS_REDIRECTS + 1):
        try:
            host = yarl.URL(url).raw_host or ""
        except ValueError:  # a Location no client can follow (a bad port): the 3xx stands
            break
        if guard.check_host_literal(host) is not None:
            if hop:  # a redirect the crawler may not follow: the 3xx stands
                break
            return None, b"", ErrorKind.BLOCKED_ADDRESS
        try:
            async with limit.slot(host), session.get(url, allow_redirects=False,
                                                     timeout=timeout) as resp:
                status = resp.status
                location = resp.headers.get("Location")
                if 300 <= status < 400 and location:
                    try:
                        url = urljoin(url, location)
                    except ValueError:  # unusable Location: the 3xx stands
                        break
                    continue
                if 200 <= status < 300:
                    body, _ = await read_body(resp, MAX_ROBOTS_BYTES)
        except Exception as exc:  # mapped to a kind, or re-raised, by error_kind
            kind = error_kind(exc)
            if kind in (ErrorKind.BLOCKED_ADDRESS, ErrorKind.INVALID_URL) and hop:
                break  # a redirect the crawler may not follow: the 3xx stands
            status, error = None, kind
        break
    return status, body, error
