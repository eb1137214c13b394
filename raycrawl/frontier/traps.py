"""Crawler-trap limits on URL shapes: path repetition and length, path templates, query shapes,
per-host budgets.

- a path segment repeated more than ``max_segment_repeats`` times (``/a/b/a/b/a/b/a``), or more
  than ``max_path_segments`` segments (Heritrix's pathological-path and too-many-segments rules);
- more than ``max_path_variants`` URLs of one host with one *path template*: the path with its
  numbers, dates and long hex ids folded (``/cal/2020/1`` and ``/cal/1999/12`` are both
  ``/cal/{n}/{n}``), a calendar or a session id in the path;
- more than ``max_query_variants`` URLs with the same host, path and query keys (a calendar in
  the query);
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
from raycrawl.formats.storage import Store, u64

_SHAPE = b"t"  # t <hash of host, path, query keys> -> URLs seen with that shape
_TEMPLATE = b"T"  # T <hash of host, path template> -> URLs seen with that template
_HOST = b"h"  # h <hash of host> -> URLs of the host scheduled
_SEED_HOST = b"g"  # g <hash of host> -> 1: a seed's host
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{8,}")
_NUMBER = re.compile(r"\d+")


def path_template(path: str) -> str:
    """``path`` with long hex ids (8+ hex digits with a digit among them, UUIDs) folded to
    ``{h}`` and runs of digits to ``{n}``: dates, counters and ids give one template."""

    def hex_id(m: re.Match[str]) -> str:
        return "{h}" if any(c.isdigit() for c in m[0]) else m[0]

    return _NUMBER.sub("{n}", _HEX_ID.sub(hex_id, path))


def repeated_segments(path: str) -> int:
    """How often the most repeated path segment occurs (``/a/b/a/b/a`` -> 3)."""
    segments = [s for s in path.split("/") if s]
    return max(Counter(segments).values(), default=0)


class TrapGuard:
    """Counts URL shapes and per-host schedules in a strategy worker's store."""

    def __init__(self, store: Store, max_segment_repeats: int, max_query_variants: int,
                 max_pages_per_host: int | None, max_path_variants: int | None = None,
                 max_path_segments: int | None = None,
                 max_host_hops: int | None = None) -> None:
        self.store = store
        self.max_host_hops = max_host_hops
        self.max_segment_repeats = max_segment_repeats
        self.max_query_variants = max_query_variants
        self.max_pages_per_host = max_pages_per_host
        self.max_path_variants = max_path_variants
        self.max_path_segments = max_path_segments
        self.counts: dict[bytes, int] = {}
        self.dirty: set[bytes] = set()

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
                key = _SEED_HOST + u64(xxhash.xxh64_intdigest(host.encode()))
                if not self._count(key):
                    self._bump(key)

    def hops(self, host: str, hops: int) -> int:
        """The host hops of a URL of ``host`` found at ``hops``: 0 on a seed's host."""
        if self.max_host_hops is None or not hops:
            return hops
        return 0 if self._count(_SEED_HOST + u64(xxhash.xxh64_intdigest(host.encode()))) else hops

    def verdict(self, url: str, host: str, hops: int = 0) -> ErrorKind | None:
        """None to schedule ``url`` (``hops`` from a seed's host, see :meth:`hops`); else the
        error kind it ends with.  Counts it either way it is scheduled, so call it once per
        new URL."""
        if self.max_host_hops is not None and hops > self.max_host_hops:
            return ErrorKind.TRAP
        parts = urlsplit(url)
        if repeated_segments(parts.path) > self.max_segment_repeats:
            return ErrorKind.TRAP
        if (self.max_path_segments is not None
                and parts.path.count("/") > self.max_path_segments):
            return ErrorKind.TRAP
        if self.max_path_variants is not None:
            digest = xxhash.xxh64_intdigest(f"{host}\n{path_template(parts.path)}".encode())
            template = _TEMPLATE + u64(digest)
            if self._count(template) >= self.max_path_variants:
                return ErrorKind.TRAP
            self._bump(template)
        if parts.query:
            keys = ",".join(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))
            digest = xxhash.xxh64_intdigest(f"{host}\n{parts.path}\n{keys}".encode())
            shape = _SHAPE + u64(digest)
            if self._count(shape) >= self.max_query_variants:
                return ErrorKind.TRAP
            self._bump(shape)
        if self.max_pages_per_host is not None:
            per_host = _HOST + u64(xxhash.xxh64_intdigest(host.encode()))
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
