"""A queued URL, as a DB worker's queue stores it (msgpack) and the spider feed carries it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


def pack_meta(meta: dict[str, Any]) -> bytes | None:
    """A follow's user meta as the queue and the streams carry it (None when empty)."""
    return msgpack.packb(meta) if meta else None


def unpack_meta(raw: bytes | None) -> dict[str, Any]:
    return msgpack.unpackb(raw) if raw else {}


# where a packed entry's fields hold them
FINGERPRINT, HOST, ATTEMPTS, NOT_BEFORE, VISIT = 1, 2, 6, 9, 15
# (VISIT: if any)


@dataclass(slots=True)
class Entry:
    """A queued URL; ``attempts`` counts its earlier fetches that ended in a retry.  A value:
    never changed in place, a changed copy is ``dataclasses.replace``'s (not frozen: a frozen
    dataclass's ``__init__`` took 3.8 µs against 0.4, and a cut builds thousands a second)."""

    url: str
    fingerprint: int
    host: str
    partition: int
    depth: int
    score: float
    attempts: int = 0
    redirect_chain: tuple[str, ...] = ()
    crashes: int = 0  # times a worker died while this URL was leased
    not_before: float = 0.0  # wall clock: a retry waits for its backoff, its host does not
    callback: str | None = None  # the spider callback for its page (None: ``parse``)
    meta: bytes | None = None  # the follow's user meta (msgpack), for ``response.meta``
    method: str | None = None  # None: GET
    headers: bytes | None = None  # extra request headers (msgpack map)
    body: bytes | None = None
    # Revisits (see raycrawl.db_worker.revisits): which fetch of the URL this is (1: the first),
    # the last visit's validators and body digest, the URL's own fixed revisit interval (a
    # follow's age, a reseeded seed's period) and the interval --adaptive reached for it.  For
    # a revisit ``not_before`` is its due time.
    visit: int = 1
    etag: str | None = None
    last_modified: str | None = None
    digest: bytes | None = None
    interval_s: float | None = None
    adapted_s: float | None = None
    fetched_s: float | None = None  # when the last visit started (epoch seconds)
    hops: int = 0  # host changes on its path from a seed's host (strategy_worker.traps)
    render: bytes | None = None  # a follow's render choice (raycrawl.render.spec)

    def pack(self) -> bytes:
        fields = [self.url, self.fingerprint, self.host, self.partition, self.depth, self.score,
                  self.attempts, list(self.redirect_chain), self.crashes, self.not_before]
        extra = [self.callback, self.meta, self.method, self.headers, self.body,
                 None if self.visit == 1 else self.visit, self.etag, self.last_modified,
                 self.digest, self.interval_s, self.adapted_s, self.fetched_s,
                 self.hops or None, self.render]
        while extra and extra[-1] is None:
            extra.pop()
        return msgpack.packb(fields + extra)

    @classmethod
    def unpack(cls, raw: bytes) -> Entry:
        return cls.of_fields(msgpack.unpackb(raw))

    @classmethod
    def of_fields(cls, fields: list[Any]) -> Entry:
        """The entry of a packed one's fields (``msgpack.unpackb`` of :meth:`pack`); a cut
        reads :data:`HOST` and :data:`NOT_BEFORE` there before it builds the entries it takes."""
        (url, fp, host, part, depth, score, attempts, chain, crashes, not_before) = fields[:10]
        extra = fields[10:] + [None] * (24 - len(fields))
        (callback, meta, method, headers, body, visit, etag, modified, digest, interval, adapted,
         fetched, hops, render) = extra
        return cls(url, fp, host, part, depth, score, attempts, tuple(chain), crashes,
                   not_before, callback, meta, method, headers, body, visit or 1, etag, modified,
                   digest, interval, adapted, fetched, hops or 0, render)
