"""Link extraction from HTML with parsel; decoding follows the header, a BOM or <meta>."""

from __future__ import annotations

from urllib.parse import urljoin

from parsel import Selector
from w3lib.encoding import html_to_unicode

HTML_TYPES = ("text/html", "application/xhtml+xml")
_HREFS = "//a/@href | //area/@href"


def is_html(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


def decode_html(body: bytes, content_type: str | None) -> str:
    """The page as text; undecodable bytes become U+FFFD instead of raising."""
    _, text = html_to_unicode(content_type, body)
    return text


def extract_links(page_url: str, body: bytes, content_type: str | None) -> list[str]:
    """Absolute link targets of an HTML page, in document order, not yet canonical.

    Relative links are resolved against ``<base href>`` when the page has one.
    """
    text = decode_html(body, content_type)
    if not text.strip():
        return []
    sel = Selector(text=text, type="html")
    base = sel.xpath("//base/@href").get()
    base_url = urljoin(page_url, base.strip()) if base else page_url
    links = []
    for href in sel.xpath(_HREFS).getall():
        href = href.strip()
        if href and not href.startswith("#"):
            try:
                links.append(urljoin(base_url, href))
            except ValueError:  # e.g. an invalid IPv6 literal in the href
                continue
    return links
