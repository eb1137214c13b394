"""URL canonicalisation, fingerprints, host keys and partitioning.

Every process computes the same values for the same input: the fingerprint and the partition
come from xxhash, never from Python's randomised ``hash()``.

Canonicalisation is on the hot path (every link of every page): URLs that are already canonical
in an obvious way (lower-case host, no port or a non-default one, a plain path, no query, no
fragment) skip w3lib, and the result for a URL is cached per process, since the links of a site
repeat from page to page.  A test checks the fast path against w3lib's answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import xxhash
import yarl
from w3lib.url import canonicalize_url

from raycrawl.errors import InvalidURL

ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class URLInfo:
    """A canonical URL with the keys the frontier routes it by."""

    url: str
    fingerprint: int
    host: str
    partition: int


# Already canonical: scheme, lower-case LDH host (or IPv4), optional port, a path of unreserved
# characters without dot segments; no query, no fragment, no percent-encoding.
_PLAIN = re.compile(r"(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::([1-9][0-9]{0,4}))?"
                    r"(/[A-Za-z0-9_~/-]*(?:\.[A-Za-z0-9_~-]+[A-Za-z0-9_~/-]*)*)")
CACHE_SIZE = 1 << 15  # URLInfo remembered per process (~10 MB)


def canonicalize(url: str) -> str:
    """Return the canonical form of an absolute http(s) URL.

    The fragment is dropped, query parameters are sorted, scheme and host are lower-cased
    (IDNs become punycode), the default port is dropped, percent-encoding is normalised and
    dot segments are resolved.  Raises :class:`InvalidURL` for anything that is not an
    absolute http or https URL with a host.
    """
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be a string, not {type(url).__name__}")
    return _canonical(url)[0]


def _canonical(url: str) -> tuple[str, str]:
    """(canonical URL, host key) of ``url``."""
    plain = _PLAIN.fullmatch(url)
    if plain is not None and ".." not in plain[2]:
        scheme, host, port = plain[1], plain[2], plain[3]
        if port is None:
            return url, host
        if int(port) <= 65535 and int(port) != _DEFAULT_PORTS[scheme]:
            return url, host
    text = url.strip()
    scheme, sep, _ = text.partition(":")
    if not sep or scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidURL(f"not an http(s) URL: {url!r}")
    try:
        parsed = yarl.URL(canonicalize_url(text), encoded=True)
    except (ValueError, UnicodeError) as exc:
        raise InvalidURL(f"unparsable URL {url!r}: {exc}") from None
    raw_host = parsed.raw_host
    if raw_host and raw_host.endswith(".") and raw_host.strip("."):
        raw_host = raw_host.rstrip(".")  # "h.com." is "h.com": one host, one key, one URL
        try:
            parsed = parsed.with_host(raw_host)
        except ValueError as exc:
            raise InvalidURL(f"unparsable URL {url!r}: {exc}") from None
    if not raw_host or not raw_host.strip("."):
        raise InvalidURL(f"URL has no host: {url!r}")
    if parsed.explicit_port is not None and parsed.explicit_port == _DEFAULT_PORTS[parsed.scheme]:
        parsed = parsed.with_port(None)
    return str(parsed), raw_host.lower()


def host_of(canonical_url: str) -> str:
    """The host key of a canonical URL: the lower-cased host name without port."""
    host = yarl.URL(canonical_url, encoded=True).raw_host
    if not host:
        raise InvalidURL(f"URL has no host: {canonical_url!r}")
    return host


def fingerprint(canonical_url: str) -> int:
    """A stable unsigned 64-bit fingerprint of a canonical URL."""
    return xxhash.xxh64_intdigest(canonical_url.encode("utf-8"))


def request_fingerprint(canonical_url: str, method: str = "GET", body: bytes | None = None) -> int:
    """The fingerprint of a request: its URL's for a GET without a body, else one that also
    covers the method and the body (a POST of a form and a GET of its URL are two requests)."""
    if method == "GET" and not body:
        return fingerprint(canonical_url)
    h = xxhash.xxh64(f"{method} {canonical_url}\n".encode())
    h.update(body or b"")
    return h.intdigest()


def partition_of(host: str, partitions: int) -> int:
    """``stable_hash(host) mod partitions``, identical in every process and run."""
    return xxhash.xxh32_intdigest(host.lower().encode("utf-8")) % partitions


def url_info(url: str, partitions: int) -> URLInfo:
    """Canonicalise ``url`` and compute its fingerprint, host and partition (cached)."""
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be a string, not {type(url).__name__}")
    return _url_info(url, partitions)


@lru_cache(maxsize=CACHE_SIZE)
def _url_info(url: str, partitions: int) -> URLInfo:
    canonical, host = _canonical(url)
    return URLInfo(canonical, fingerprint(canonical), host, partition_of(host, partitions))
