"""Crawler-trap limits on URL shapes: template chains, path repetition and length, template and
query counts, per-host budgets.

- **template chains** (on by default): a calendar is a chain of pages of one *template* (the
  path with its numbers, dates and long hex ids folded, ``/cal/2020/1`` and ``/cal/1999/12``
  both ``/cal/{n}/{n}``, plus the query's keys), each linking the next; a site's real pages
  of one template are not.  A page that links at most ``CHAIN_LINKS`` (2) URLs of its own
  host and template (next, or previous and next) and no new URL of its host with another
  template (a listing's new items) is a link of a chain: a new URL it links with its
  template is one step further along the chain than the page (the first page of a chain,
  found from another template, is step 0).  Of the URLs two or more steps along,
  at most ``max_template_chain`` (50) are scheduled per host and template, the rest are
  traps: a calendar costs about 50 requests, in one direction or two, in the path or the
  query.  A catalogue (``/item/{n}`` found from listing pages, however they paginate), pages
  of one template that link many others (``/p/{n}``, eight links each) and a pagination that
  links its first and last pages besides its neighbours are never chains, and are crawled
  whole; a pagination that links only its neighbours and lists nothing new is a chain.  A
  chain that is not a trap (older/newer posts reached only through each other) needs a
  higher limit;
- a path segment repeated more than ``max_segment_repeats`` times (``/a/b/a/b/a/b/a``), or more
  than ``max_path_segments`` segments (Heritrix's pathological-path and too-many-segments rules);
- more than ``max_path_variants`` URLs of one host with one path template, more than
  ``max_query_variants`` with the same host, path and query keys (100,000 each by default:
  backstops that bound a trap the chains do not see, such as a calendar linking four dates of
  its own a page; as the main signal they would cut big sites as readily as traps);
- ``max_pages_per_host`` URLs scheduled for one host (``host-budget``);
- with ``max_host_hops``, more host changes than that on the path from a seed's host to the
  URL (generated subdomains, link farms): a link to another host counts its page's hops + 1, a
  link within a host its page's, a link to a seed's host 0.  A URL keeps the hops of the path
  it was first found by (as its depth), so the rule cuts at that path, not the shortest.

A strategy worker checks each new link once (it owns the link's host), so the counts here are
exact for the whole crawl.  A link over a limit is not fetched: it ends with error ``trap``
(or ``host-budget``) in ``OUT/pages``.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import xxhash

from raycrawl.errors import ErrorKind
from raycrawl.storage.store import Store, part_key, u64
from raycrawl.urls import fingerprint, host_of, partition_of

# Every key starts with its table's letter and the partition of its host (P, 2 bytes).
_SHAPE = b"t"  # t <P> <hash of host, path, query keys> -> URLs seen with that shape
_TEMPLATE = b"T"  # T <P> <hash of host, path template> -> URLs seen with that template
_HOST = b"h"  # h <P> <hash of host> -> URLs of the host scheduled
_SEED_HOST = b"g"  # g <P> <hash of host> -> 1: a seed's host
_CHAIN = b"c"  # c <P> <fingerprint> -> its step along a template chain (stored when > 0)
_CHAIN_DEEP = b"C"  # C <P> <hash of host, template> -> URLs scheduled 2+ steps along its chains
TABLES = _SHAPE + _TEMPLATE + _HOST + _SEED_HOST + _CHAIN + _CHAIN_DEEP
CHAIN_LINKS = 2  # a page with at most this many links of its own host and template is a chain's
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{8,}")
_NUMBER = re.compile(r"\d+")


def path_template(path: str) -> str:
    """``path`` with long hex ids (8+ hex digits with a digit among them, UUIDs) folded to
    ``{h}`` and runs of digits to ``{n}``: dates, counters and ids give one template."""

    def hex_id(m: re.Match[str]) -> str:
        return "{h}" if any(c.isdigit() for c in m[0]) else m[0]

    return _NUMBER.sub("{n}", _HEX_ID.sub(hex_id, path))


def url_template(url: str) -> str:
    """The template of a URL within its host: its path template and its query's keys."""
    parts = urlsplit(url)
    template = path_template(parts.path)
    if parts.query:
        keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
        template += "?" + "&".join(keys)
    return template


_DIGITS = str.maketrans("", "", "0123456789")


def _skeleton(url: str) -> str:
    """The URL up to its query, without digits."""
    return url.partition("?")[0].translate(_DIGITS)


def repeated_segments(path: str) -> int:
    """How often the most repeated path segment occurs (``/a/b/a/b/a`` -> 3)."""
    segments = [s for s in path.split("/") if s]
    return max(Counter(segments).values(), default=0)


class TrapGuard:
    """Counts URL shapes and per-host schedules in a strategy worker's store."""

    def __init__(self, store: Store, partitions: int, max_segment_repeats: int,
                 max_query_variants: int | None,
                 max_pages_per_host: int | None, max_path_variants: int | None = None,
                 max_path_segments: int | None = None,
                 max_host_hops: int | None = None, max_template_chain: int | None = None
                 ) -> None:
        self.store = store
        self.partitions = partitions
        self.max_template_chain = max_template_chain
        self.max_host_hops = max_host_hops
        self.max_segment_repeats = max_segment_repeats
        self.max_query_variants = max_query_variants
        self.max_pages_per_host = max_pages_per_host
        self.max_path_variants = max_path_variants
        self.max_path_segments = max_path_segments
        self.counts: dict[bytes, int] = {}
        self.dirty: set[bytes] = set()

    def _key(self, table: bytes, host: str, value: int | str) -> bytes:
        """``table``'s key of ``value`` (a fingerprint, or a text hashed) for a URL of
        ``host``."""
        if isinstance(value, str):
            value = xxhash.xxh64_intdigest(value.encode())
        return part_key(table, partition_of(host, self.partitions)) + u64(value)

    def forget(self) -> None:
        """Drop the counts read (partitions moved in or out: theirs are read again)."""
        if not self.dirty:
            self.counts.clear()

    def _count(self, key: bytes) -> int:
        if key not in self.counts:
            raw = self.store.get(key)
            self.counts[key] = int.from_bytes(raw, "big") if raw else 0
        return self.counts[key]

    def _bump(self, key: bytes) -> None:
        self.counts[key] = self._count(key) + 1
        self.dirty.add(key)

    def seed_hosts(self, hosts: list[str]) -> None:
        """Remember the hosts of seeds: their URLs are 0 host hops from a seed's host."""
        if self.max_host_hops is not None:
            for host in set(hosts):
                key = self._key(_SEED_HOST, host, host)
                if not self._count(key):
                    self._bump(key)

    def hops(self, host: str, hops: int) -> int:
        """The host hops of a URL of ``host`` found at ``hops``: 0 on a seed's host."""
        if self.max_host_hops is None or not hops:
            return hops
        return 0 if self._count(self._key(_SEED_HOST, host, host)) else hops

    def chains(self, parent: str, links: list[tuple[str, str, int, bool]]) -> dict[int, int]:
        """The chain steps of a page's links (see the module docstring): ``parent`` is the
        page's URL, ``links`` all its links of this worker (url, host, fingerprint, new),
        known or not.  Returns fingerprint -> step for the links that continue a chain."""
        if self.max_template_chain is None:
            return {}
        host, template = host_of(parent), url_template(parent)
        # Two URLs of one template without hex ids have one path once their digits are
        # dropped: a test in C that spares most links the template (urls are canonical).
        skeleton = None if "{h}" in template else _skeleton(parent)
        same = []
        for url, h, fp, new in links:
            if h != host:
                continue
            if (skeleton is None or _skeleton(url) == skeleton) and url_template(url) == template:
                same.append(fp)
                if len(same) > CHAIN_LINKS:
                    return {}
            elif new:  # a page that leads somewhere new (a listing's items) is no chain
                return {}
        if not same:
            return {}
        step = self._count(self._key(_CHAIN, host, fingerprint(parent))) + 1
        return {fp: step for fp in same}

    def verdict(self, url: str, host: str, hops: int = 0, chain: int = 0) -> ErrorKind | None:
        """None to schedule ``url`` (``hops`` from a seed's host, see :meth:`hops`; ``chain``
        steps along a template chain, see :meth:`chains`); else the error kind it ends with.
        Counts it either way it is scheduled, so call it once per new URL."""
        if self.max_host_hops is not None and hops > self.max_host_hops:
            return ErrorKind.TRAP
        if chain >= 2 and self.max_template_chain is not None:
            deep = self._key(_CHAIN_DEEP, host, f"{host}\n{url_template(url)}")
            if self._count(deep) >= self.max_template_chain:
                return ErrorKind.TRAP
            self._bump(deep)
        if chain:
            key = self._key(_CHAIN, host, fingerprint(url))
            self.counts[key] = chain
            self.dirty.add(key)
        parts = urlsplit(url)
        if repeated_segments(parts.path) > self.max_segment_repeats:
            return ErrorKind.TRAP
        if (self.max_path_segments is not None
                and parts.path.count("/") > self.max_path_segments):
            return ErrorKind.TRAP
        if self.max_path_variants is not None:
            template = self._key(_TEMPLATE, host, f"{host}\n{path_template(parts.path)}")
            if self._count(template) >= self.max_path_variants:
                return ErrorKind.TRAP
            self._bump(template)
        if parts.query and self.max_query_variants is not None:
            keys = ",".join(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))
            shape = self._key(_SHAPE, host, f"{host}\n{parts.path}\n{keys}")
            if self._count(shape) >= self.max_query_variants:
                return ErrorKind.TRAP
            self._bump(shape)
        if self.max_pages_per_host is not None:
            per_host = self._key(_HOST, host, host)
            if self._count(per_host) >= self.max_pages_per_host:
                return ErrorKind.HOST_BUDGET
            self._bump(per_host)
        return None

    def discard(self) -> None:
        """Forget unwritten counts."""
        for key in self.dirty:
            self.counts.pop(key, None)
        self.dirty.clear()

    def flush(self) -> None:
        """Write changed counters in one batch; keeps a bounded cache."""
        if self.dirty:
            wb = self.store.batch()
            for key in self.dirty:
                wb.put(key, self.counts[key].to_bytes(8, "big"))
            self.store.write(wb)
            self.dirty.clear()
        if len(self.counts) > 100_000:
            self.counts.clear()
