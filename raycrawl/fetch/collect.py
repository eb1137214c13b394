"""What a fetch worker hands back for a batch's hosts: the rows of the spider log (pages,
links), the robots.txt fetches, the items and the cookies, gathered as the fetches end.

Pages, robots.txt fetches, items and cookies are records (``raycrawl.formats.schemas``), a
few a page.  Links are filled column by column instead: a page has up to
``max_links_per_page`` of them, and a record object per link cost more than the rest of the
link's work (``benchmarks/README.md``, step 22).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import pyarrow as pa

from raycrawl.errors import InvalidURL
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.result import FetchResult
from raycrawl.formats.entry import pack_meta
from raycrawl.formats.schemas import (
    FetchOutcome,
    FetchRequest,
    HostCookies,
    ItemFound,
    LinkFound,
    RobotsFetch,
)
from raycrawl.spider import Follow
from raycrawl.urls import URLInfo, request_fingerprint, url_info


class Link(NamedTuple):
    """A link to follow: a target found on a page (callback etc. None) or a spider's follow."""

    url: str
    callback: str | None = None
    meta: bytes | None = None
    priority: float | None = None
    method: str | None = None  # None: GET
    headers: bytes | None = None  # msgpack map
    body: bytes | None = None
    interval_s: float | None = None  # revisit interval
    modified_at: float | None = None  # when the page last changed (a sitemap's <lastmod>)
    render: bytes | None = None  # a follow's render choice (raycrawl.render.spec)

    @classmethod
    def follow(cls, f: Follow) -> Link:
        """A spider's follow (the user's ``age`` is the link's revisit interval)."""
        return cls(f.url, f.callback, pack_meta(dict(f.meta or {})), f.priority,
                   None if f.method == "GET" else f.method, pack_meta(dict(f.headers or {})),
                   f.body, f.age_s, None, f.render)


# The link columns a follow sets (Link's fields past its URL): null for plain links.
_FOLLOW_COLUMNS = Link._fields[1:]
_LINK_NAMES = LinkFound.layout().names


class Parent(NamedTuple):
    """The page links are found on, as their rows name it."""

    url: str
    depth: int
    host: str
    hops: int

    @classmethod
    def of(cls, req: FetchRequest) -> Parent:
        return cls(req.url, req.depth, req.host, req.hops)


def accepted(targets: Iterable[str | Link], opts: FetchOptions, limit: int
             ) -> tuple[list[tuple[URLInfo, Link | None]], int]:
    """The targets to follow: canonical, valid, within the length limit and the scope, each
    once, at most ``limit``; (their URL and follow, how many were out of scope)."""
    seen: set[int] = set()
    kept: list[tuple[URLInfo, Link | None]] = []
    scope = None if opts.scope.everything else opts.scope
    out_of_scope = 0
    for target in targets:
        link, url = (target, target.url) if isinstance(target, Link) else (None, target)
        if len(url) > opts.max_url_length:
            continue
        try:
            info = url_info(url, opts.partitions)
        except InvalidURL:
            continue
        if link is not None and (link.method or link.body):  # a POST: its own request
            info = dataclasses.replace(info, fingerprint=request_fingerprint(
                info.url, link.method or "GET", link.body))
        if info.fingerprint in seen or len(info.url) > opts.max_url_length:
            continue
        seen.add(info.fingerprint)
        if scope is not None and not scope.allows(info.url, info.host):
            out_of_scope += 1
            continue
        kept.append((info, link))
        if len(kept) >= limit:
            break
    return kept, out_of_scope


class Collector:
    """Accumulates one batch's (or one host's) rows as its fetches end."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.pages: list[FetchOutcome] = []
        self.robots: list[RobotsFetch] = []
        self.items: list[ItemFound] = []
        self.cookies: list[HostCookies] = []
        self.links: dict[str, list[Any]] = {name: [] for name in _LINK_NAMES}
        self.plain_links = 0  # links since the last follow: their follow columns are null

    def page(self, outcome: FetchOutcome, items: Sequence[bytes] = ()) -> None:
        """A fetched URL's row, with the items its callback yielded."""
        self.pages.append(outcome)
        self.items += [ItemFound(outcome.url, outcome.fingerprint, item) for item in items]

    def link_rows(self, parent: Parent, targets: Iterable[str | Link], depth: int,
                  chain: Sequence[str], opts: FetchOptions, limit: int | None = None
                  ) -> tuple[int, int]:
        """Add a page's links (see :func:`accepted`; at most ``limit``, default
        ``max_links_per_page``); returns how many, and how many were out of scope.  A link
        to another host is one more host hop than its page."""
        kept, out_of_scope = accepted(targets, opts, limit or opts.max_links_per_page)
        n, lk = len(kept), self.links
        follows = [link for _, link in kept]
        if any(follows):  # a spider's: the follow columns, null for the links before
            self._pad_follows()
            for i, name in enumerate(_FOLLOW_COLUMNS, start=1):
                lk[name] += [x[i] if x else None for x in follows]
        else:
            self.plain_links += n
        lk["parent_url"] += [parent.url] * n
        lk["parent_depth"] += [parent.depth] * n
        lk["url"] += [i.url for i, _ in kept]
        lk["fingerprint"] += [i.fingerprint for i, _ in kept]
        lk["host"] += [i.host for i, _ in kept]
        lk["partition"] += [i.partition for i, _ in kept]
        lk["depth"] += [depth] * n
        hops = parent.hops or 0
        lk["hops"] += [hops if i.host == parent.host else hops + 1 for i, _ in kept]
        lk["redirect_chain"] += [list(chain)] * n
        return n, out_of_scope

    def absorb(self, other: Collector) -> None:
        """Append ``other``'s rows after this one's."""
        if any(other.links[name] for name in _FOLLOW_COLUMNS):
            self._pad_follows()
            other._pad_follows()
        for name, values in other.links.items():
            self.links[name] += values
        self.plain_links += other.plain_links
        self.pages += other.pages
        self.robots += other.robots
        self.items += other.items
        self.cookies += other.cookies

    def take(self) -> Collector:
        """The rows so far, in a collector of their own; this one starts empty again."""
        taken = Collector()
        taken.absorb(self)
        self._reset()
        return taken

    def _pad_follows(self) -> None:
        """Give the links since the last follow their null follow columns."""
        if self.plain_links:
            for name in _FOLLOW_COLUMNS:
                self.links[name] += [None] * self.plain_links
            self.plain_links = 0

    def result(self) -> FetchResult:
        links: dict[str, Any] = dict(self.links)
        n = len(links["url"])
        for name in _FOLLOW_COLUMNS:  # without follows (no spider): all null, built at once
            links[name] = (links[name] + [None] * self.plain_links if links[name] else
                           pa.nulls(n, LinkFound.schema().field(name).type))
        return FetchResult(FetchOutcome.to_batch(self.pages), LinkFound.batch_of(links),
                           RobotsFetch.to_batch(self.robots), ItemFound.to_batch(self.items),
                           HostCookies.to_batch(self.cookies))
