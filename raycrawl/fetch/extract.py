"""Link extraction from HTML; decoding follows the header, a BOM or <meta>.

Two parsers give the same links: ``lexbor`` (selectolax, the default: about half the CPU of
lxml through parsel on a 50 KB page, see benchmarks/README.md) and ``parsel`` (lxml, the selector
API Scrapy users know).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from parsel import Selector
from selectolax.lexbor import LexborHTMLParser
from w3lib.encoding import html_to_unicode

from raycrawl.config import LINK_PARSERS

HTML_TYPES = ("text/html", "application/xhtml+xml")
# <link rel> kinds that lead to pages (as wget, Heritrix and Nutch follow them); not
# stylesheet, icon, preload and the like, which are a page's parts.  rel=canonical is followed
# as a link: the canonical page is fetched once like any URL (dedup makes it free when it is
# the page itself); it does not rename or merge the page that names it.
NAVIGATIONAL_RELS = frozenset({
    "alternate", "next", "prev", "previous", "first", "last", "up", "index", "contents",
    "start", "home", "search", "help", "glossary", "chapter", "section", "subsection",
    "appendix", "archives", "author", "canonical", "bookmark"})
# Anchors, then the other elements: one selector over all of them costs a sixth more.
_OTHERS_CSS = "link[href], frame[src], iframe[src]"
_OTHERS_XPATH = "//link[@href] | //frame[@src] | //iframe[@src]"


def _target(tag: str | None, attrs: Mapping[str, str | None]) -> str | None:
    """The URL an element leads to, if it is a link to follow."""
    if tag in ("frame", "iframe"):
        return attrs.get("src") or ""
    if tag == "link" and not NAVIGATIONAL_RELS.intersection(
            (attrs.get("rel") or "").lower().split()):
        return None
    return attrs.get("href") or ""


def is_html(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


def decode_html(body: bytes, content_type: str | None) -> str:
    """The page as text; undecodable bytes become U+FFFD instead of raising."""
    _, text = html_to_unicode(content_type, body)
    return text


def extract_links(page_url: str, body: bytes, content_type: str | None,
                  parser: str = "lexbor") -> list[str]:
    """Absolute link targets of an HTML page, not yet canonical: ``<a href>`` and ``<area
    href>`` in document order, then ``<link href>`` of a navigational ``rel``
    (``NAVIGATIONAL_RELS``), ``<frame src>`` and ``<iframe src>``.  Relative links are
    resolved against ``<base href>`` when the page has one."""
    text = decode_html(body, content_type)
    if not text.strip():
        return []
    if parser == "lexbor":
        doc = LexborHTMLParser(text)
        node = doc.css_first("base[href]")
        base = node.attributes.get("href") if node is not None else None
        hrefs = [n.attributes.get("href") or "" for n in doc.css("a[href], area[href]")]
        hrefs += [t for n in doc.css(_OTHERS_CSS)
                  if (t := _target(n.tag, n.attributes)) is not None]
    elif parser == "parsel":
        sel = Selector(text=text, type="html")
        base = sel.xpath("//base/@href").get()
        hrefs = sel.xpath("//a/@href | //area/@href").getall()
        hrefs += [t for n in sel.xpath(_OTHERS_XPATH)
                  if (t := _target(n.root.tag, n.attrib)) is not None]
    else:
        raise ValueError(f"unknown link parser {parser!r}, not one of {LINK_PARSERS}")
    base_url = page_url
    if base:
        try:
            base_url = urljoin(page_url, base.strip())
        except ValueError:  # an unusable <base href> (an invalid IPv6 literal): ignored
            pass
    return resolve(base_url, hrefs)


def resolve(base_url: str, hrefs: list[str]) -> list[str]:
    """``urljoin`` of every href against ``base_url``, without fragment-only and empty hrefs.

    The two common shapes skip ``urljoin``: an absolute http(s) URL with a host, and a
    root-relative path without dot segments (``/a/b``), which only needs the base's origin.
    A test checks that both canonicalise as ``urljoin``'s result does.
    """
    parts = urlsplit(base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    links = []
    for href in hrefs:
        href = href.strip()
        if not href or href[0] == "#":
            continue
        if href.startswith(("http://", "https://")) and href[href.index("//") + 2:][:1].isalnum():
            links.append(href)
        elif href[0] == "/" and href[1:2] != "/" and "/." not in href:
            links.append(origin + href)
        else:
            try:
                links.append(urljoin(base_url, href))
            except ValueError:  # e.g. an invalid IPv6 literal in the href
                continue
    return links
