"""A host's cookies between batches (a crawl with ``cookies``): a jar per host while its URLs
are fetched, stored as Set-Cookie lines (msgpack) in the DB worker between batches."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

import aiohttp
import msgpack
from yarl import URL

MAX_COOKIES = 100  # cookies kept per host (a hostile server may set any number)


def load_cookies(host: str, raw: bytes | None) -> aiohttp.CookieJar:
    """A host's cookie jar from its stored Set-Cookie lines (``dump_cookies``)."""
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: hosts that are IP addresses keep cookies
    for line in msgpack.unpackb(raw) if raw else []:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(line)
        except CookieError:  # stored by an older version of the parser: dropped
            continue
        jar.update_cookies(cookie, URL.build(scheme="http", host=host))
    return jar


def dump_cookies(jar: aiohttp.CookieJar) -> bytes:
    """The jar's cookies as Set-Cookie lines (msgpack), at most ``MAX_COOKIES``."""
    return msgpack.packb([m.OutputString() for m in list(jar)[-MAX_COOKIES:]])
