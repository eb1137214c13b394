"""Sitemaps (sitemaps.org): the files robots.txt names, read by fetch workers like pages.

A sitemap is a request whose callback is :data:`SITEMAP` (a name no spider method can have):
the frontier queues, routes, dedups and revisits it like any URL, and robots rules, scope and
politeness apply to it and to the URLs it lists.  Its body (gzip or not; XML ``urlset`` or
``sitemapindex``, or plain text, one URL a line) gives links: the URLs it lists, with their
``<lastmod>``, and, from an index, more sitemaps one level deeper, followed up to
:data:`MAX_DEPTH`.  The protocol's caps hold: at most :data:`MAX_BYTES` uncompressed and
:data:`MAX_URLS` URLs a file (the rest of a bigger file is left out).

Parsed with lxml, which parsel already brings: ``iterparse`` with entities and network access
off, clearing elements as it goes, so a 50 MB file never sits in memory as a tree.  The
sitemap libraries of PyPI (ultimate-sitemap-parser, advertools) fetch the files themselves,
which would bypass the crawl's politeness, address guard and retries.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree  # type: ignore[import-untyped]

SITEMAP = "raycrawl:sitemap"  # the callback of a sitemap request
MAX_BYTES = 50 * 1024 * 1024  # uncompressed, a file
MAX_URLS = 50_000  # a file
MAX_DEPTH = 3  # sitemap depth: robots.txt's sitemaps are 0, an index's children one more


class BadSitemap(ValueError):
    """The body is not a sitemap (not XML of the protocol, or bad gzip)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A URL a sitemap lists: a page (with its ``<lastmod>``, epoch seconds) or, in an index,
    another sitemap."""

    url: str
    modified_at: float | None = None
    sitemap: bool = False


def unpack(body: bytes) -> bytes:
    """The sitemap's bytes: gunzipped when they are gzip (``.xml.gz`` is served as is, not
    with a Content-Encoding), at most :data:`MAX_BYTES`."""
    if not body.startswith(b"\x1f\x8b"):
        return body[:MAX_BYTES]
    inflate = zlib.decompressobj(31)
    try:
        return inflate.decompress(body, MAX_BYTES)
    except zlib.error as exc:
        raise BadSitemap(f"bad gzip: {exc}") from None


def parse_lastmod(text: str | None) -> float | None:
    """Epoch seconds of a W3C datetime (``2024``, ``2024-05``, ``2024-05-01``,
    ``2024-05-01T10:00:00+02:00``, ``...Z``); None if absent or not one."""
    if not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    for fmt in ("%Y", "%Y-%m"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse(body: bytes) -> list[Listed]:
    """What a sitemap lists (at most :data:`MAX_URLS`); :class:`BadSitemap` if it is none."""
    data = unpack(body)
    if not data.strip():
        raise BadSitemap("empty")
    if not data.lstrip()[:1] == b"<":  # the plain-text format: a URL a line
        text = data.decode("utf-8", "replace")
        urls = [line.strip() for line in text.splitlines() if line.strip()]
        if not all(u.startswith(("http://", "https://")) for u in urls[:MAX_URLS]):
            raise BadSitemap("neither XML nor a list of URLs")
        return [Listed(u) for u in urls[:MAX_URLS]]
    listed: list[Listed] = []
    root = ""
    events = etree.iterparse(io.BytesIO(data), events=("start", "end"), resolve_entities=False,
                             no_network=True, huge_tree=False, load_dtd=False)
    try:
        for event, element in events:
            name = _local(element.tag)
            if event == "start":
                if not root:
                    root = name
                    if root not in ("urlset", "sitemapindex"):
                        raise BadSitemap(f"root element <{root}> is not urlset or sitemapindex")
                continue
            if name in ("url", "sitemap"):
                fields = {_local(child.tag): (child.text or "").strip() for child in element}
                if fields.get("loc"):
                    listed.append(Listed(fields["loc"], parse_lastmod(fields.get("lastmod")),
                                         sitemap=name == "sitemap"))
                element.clear()
                if len(listed) >= MAX_URLS:
                    break
    except etree.XMLSyntaxError as exc:
        if len(data) < MAX_BYTES:
            raise BadSitemap(f"not well-formed XML: {exc}") from None
        # cut off at the cap: what was read stands
    if not root:
        raise BadSitemap("empty")
    return listed
