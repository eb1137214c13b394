"""Crawler-trap limits on URL shapes: path repetition, query shapes, per-host budgets.

A strategy worker checks each new link once (it owns the link's host), so the counts here are
exact for the whole crawl.  A link over a limit is not fetched: it ends with error ``trap``
(or ``host-budget``) in ``OUT/pages``.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import xxhash

from raycrawl.errors import ErrorKind
from raycrawl.formats.storage import Store, u64

_SHAPE = b"t"  # t <hash of host, path, query keys> -> URLs seen with that shape
_HOST = b"h"  # h <hash of host> -> URLs of the host scheduled


def repeated_segments(path: str) -> int:
    """How often the most repeated path segment occurs (``/a/b/a/b/a`` -> 3)."""
    segments = [s for s in path.split("/") if s]
    return max(Counter(segments).values(), default=0)


class TrapGuard:
    """Counts URL shapes and per-host schedules in a strategy worker's store."""

    def __init__(self, store: Store, max_segment_repeats: int, max_query_variants: int,
                 max_pages_per_host: int | None) -> None:
        self.store = store
        self.max_segment_repeats = max_segment_repeats
        self.max_query_variants = max_query_variants
        self.max_pages_per_host = max_pages_per_host
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

    def verdict(self, url: str, host: str) -> ErrorKind | None:
        """None to schedule ``url``; else the error kind it ends with.  Counts it either way
        it is scheduled, so call it once per new URL."""
        parts = urlsplit(url)
        if repeated_segments(parts.path) > self.max_segment_repeats:
            return ErrorKind.TRAP
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
