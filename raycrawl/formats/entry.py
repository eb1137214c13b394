"""A queued URL, as a DB worker's queue stores it (msgpack) and the spider feed carries it."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack


@dataclass(slots=True, frozen=True)
class Entry:
    """A queued URL; ``attempts`` counts its earlier fetches that ended in a retry."""

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

    def pack(self) -> bytes:
        return msgpack.packb([self.url, self.fingerprint, self.host, self.partition,
                              self.depth, self.score, self.attempts, list(self.redirect_chain),
                              self.crashes, self.not_before])

    @classmethod
    def unpack(cls, raw: bytes) -> Entry:
        (url, fp, host, part, depth, score, attempts, chain, crashes,
         not_before) = msgpack.unpackb(raw)
        return cls(url, fp, host, part, depth, score, attempts, tuple(chain), crashes,
                   not_before)
