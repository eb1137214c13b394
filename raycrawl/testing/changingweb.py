"""A synthetic web whose pages change at known rates, for revisit tests and benchmarks.

Page ``/p/<i>`` of a host changes every ``period(host, i)`` seconds (never when None): its body
names its version, and it sends validators by a rule of the page (``ETag`` and
``Last-Modified``, one of them, or none), answering conditional requests with 304 when the
version is the one the request names.  Every page request is logged with whether it was
conditional, so a test can check what each visit sent and got.  With ``sitemap``, every
host's robots.txt names a sitemap listing its pages (with their ``<lastmod>``), including
``orphans`` that no page links to: host 0 (and every third) a plain ``/sitemap.xml``, host 1
a gzipped ``/sitemap.xml.gz``, host 2 an index of ``/sitemap.xml`` and a malformed
``/sitemap-bad.xml``.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate

from raycrawl.testing.synthweb import Link, SyntheticWeb

_SITEMAPS = ("/robots.txt", "/sitemap.xml", "/sitemap.xml.gz", "/sitemap-index.xml",
             "/sitemap-bad.xml")
_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


@dataclass(frozen=True, slots=True)
class Hit:
    """One page request: when (wall clock), which URL, whether conditional, the status."""

    at: float
    url: str
    conditional: bool
    status: int


def validators_of(index: int) -> tuple[bool, bool]:
    """(sends ETag, sends Last-Modified) of page ``index``: both, ETag, Last-Modified, none."""
    return ((True, True), (True, False), (False, True), (False, False))[index % 4]


class ChangingWeb(SyntheticWeb):
    """See the module docstring; ``period(host, index)`` gives each page's change period."""

    def __init__(self, period: Callable[[int, int], float | None], orphans: int = 0,
                 sitemap: bool = False, **kwargs: object) -> None:
        kwargs.setdefault("specials", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.period = period
        self.orphans = orphans  # extra pages /p/<pages>.. per host that nothing links to
        self.sitemap = sitemap
        self.t0 = float(int(time.time()))  # whole seconds: HTTP dates carry no fraction
        self.log: list[Hit] = []

    def version(self, host: int, index: int, now: float | None = None) -> int:
        period = self.period(host, index)
        if period is None:
            return 0
        return int(((time.time() if now is None else now) - self.t0) // period)

    def changed_at(self, host: int, index: int, version: int) -> float:
        period = self.period(host, index)
        return self.t0 + (version * period if period else 0.0)

    def orphan_urls(self) -> list[str]:
        return [self.url(Link("p", h, self.pages + i)) for h in range(self.hosts)
                for i in range(self.orphans)]

    def respond(self, host: int, target: str, headers: dict[str, str] | None = None
                ) -> tuple[int, str, str, bytes]:
        headers = headers or {}
        path = target.partition("?")[0]
        if self.sitemap and path in _SITEMAPS:
            return self._sitemap_response(host, path)
        parts = path.strip("/").split("/")
        orphan = (len(parts) == 2 and parts[0] == "p" and parts[1].isdigit()
                  and self.pages <= int(parts[1]) < self.pages + self.orphans)
        if orphan or (len(parts) == 2 and parts[0] == "p" and parts[1].isdigit()
                      and int(parts[1]) < self.pages and target == self.path(
                          Link("p", host, int(parts[1])))):
            return self._page_response(host, int(parts[1]), target, headers)
        return super().respond(host, target, headers)

    def _page_response(self, host: int, index: int, target: str, headers: dict[str, str]
                       ) -> tuple[int, str, str, bytes]:
        now = time.time()
        version = self.version(host, index, now)
        etag = f'"{host}-{index}-v{version}"'
        modified = formatdate(self.changed_at(host, index, version), usegmt=True)
        send_etag, send_modified = validators_of(index)
        extra = (f"ETag: {etag}\r\n" if send_etag else "") + (
            f"Last-Modified: {modified}\r\n" if send_modified else "")
        conditional = "if-none-match" in headers or "if-modified-since" in headers
        if "if-none-match" in headers:
            fresh = send_etag and headers["if-none-match"] == etag
        else:
            fresh = send_modified and headers.get("if-modified-since") == modified
        url = f"http://{self.address(host)}:{self.ports[host]}{target}"
        with self.lock:
            self.hits[url.removeprefix("http://")] += 1
            self.log.append(Hit(now, url, conditional, 304 if fresh else 200))
        if fresh:
            return 304, "text/html; charset=utf-8", extra, b""
        if index >= self.pages:  # an orphan: no links
            body = f"<html><body><p>orphan {index} version {version}</p></body></html>"
            return 200, "text/html; charset=utf-8", extra, body.encode()
        page = self._page(host, index).replace(
            b"</body>", f"<p>version {version}</p></body>".encode())
        return 200, "text/html; charset=utf-8", extra, page

    def _sitemap_response(self, host: int, path: str) -> tuple[int, str, str, bytes]:
        with self.lock:
            self.hits[f"{self.address(host)}:{self.ports[host]}{path}"] += 1
        origin = self.origin(host)
        if path == "/robots.txt":
            name = ("/sitemap.xml", "/sitemap.xml.gz", "/sitemap-index.xml")[host % 3]
            return 200, "text/plain", "", f"User-agent: *\nSitemap: {origin}{name}\n".encode()
        if path == "/sitemap-bad.xml":
            return 200, "application/xml", "", b"<urlset><url><loc>http://broken"
        if path == "/sitemap-index.xml":
            return 200, "application/xml", "", (
                f'<?xml version="1.0"?><sitemapindex xmlns="{_NS}">'
                f"<sitemap><loc>{origin}/sitemap.xml</loc></sitemap>"
                f"<sitemap><loc>{origin}/sitemap-bad.xml</loc></sitemap></sitemapindex>").encode()
        entries = []
        for i in range(self.pages + self.orphans):
            url = self.url(Link("p", host, i)).replace("&", "&amp;")
            when = datetime.fromtimestamp(self.changed_at(host, i, self.version(host, i)), UTC)
            entries.append(f"<url><loc>{url}</loc><lastmod>{when.isoformat()}</lastmod></url>")
        body = f'<?xml version="1.0"?><urlset xmlns="{_NS}">{"".join(entries)}</urlset>'.encode()
        if path.endswith(".gz"):
            return 200, "application/x-gzip", "", gzip.compress(body)
        return 200, "application/xml", "", body

    def hits_of(self, url: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.log if h.url == url]
