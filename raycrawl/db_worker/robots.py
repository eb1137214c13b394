"""robots.txt policies (RFC 9309) and their cache in a DB worker's RocksDB.

How a fetch of ``/robots.txt`` becomes a policy:

=========================  =================================================================
2xx                        the rules (body capped at ``MAX_ROBOTS_BYTES``, UTF-8 BOM removed)
3xx after 5 redirects,     allow all ("unavailable": the fetch follows at most 5 redirects,
a redirect not followable  each through the address guard; one to a bad port or a refused
                           address stands as the 3xx it is)
4xx                        allow all
5xx, timeout, refused,     disallow all, *for now* ("unreachable"): tried again after
reset                      ``retry_s``, doubling each time; once the next try would start
                           ``give_up_s`` or more after the first failure, the DB worker gives
                           up (:attr:`RobotsPolicy.gave_up`) and the host's URLs end as
                           ``robots-unavailable``
=========================  =================================================================

A policy is cached per origin (scheme, host, port) until it expires (``ttl_s``, 24 h by
default, as the RFC recommends at most).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import msgpack
from protego import Protego

from raycrawl.storage.store import Store, part_key
from raycrawl.urls import host_of, partition_of

MAX_ROBOTS_BYTES = 500 * 1024
MAX_ROBOTS_REDIRECTS = 5  # RFC 9309
MAX_CRAWL_DELAY_S = 60.0
TABLE = b"r"  # partitioned (see raycrawl.storage.store)


class RobotsKind(enum.Enum):
    RULES = "rules"
    ALLOW_ALL = "allow-all"
    UNAVAILABLE = "unavailable"  # disallow all until retried


def origin_of(canonical_url: str) -> str:
    """``scheme://host[:port]`` of a canonical URL (which always has a path)."""
    return canonical_url[: canonical_url.index("/", canonical_url.index("//") + 2)]


def agent_token(user_agent: str) -> str:
    """The product token robots.txt groups match: ``raycrawl`` of ``raycrawl/0.1 (...)``."""
    return user_agent.split("/", 1)[0].split()[0]


@dataclass
class RobotsPolicy:
    kind: RobotsKind
    text: str
    expires_at: float  # wall clock
    failures: int = 0  # consecutive UNAVAILABLE fetches
    failing_since: float = 0.0  # wall clock of the first of them
    _parser: Protego | None = None

    @classmethod
    def from_fetch(cls, status: int | None, body: bytes, now: float, ttl_s: float,
                   retry_s: float, previous: RobotsPolicy | None = None) -> RobotsPolicy:
        """The policy a fetch gives; an unreachable one expires after ``retry_s`` doubled for
        each failure in a row before it (``previous``: the origin's last policy)."""
        if status is not None and 200 <= status < 300:
            text = body[:MAX_ROBOTS_BYTES].decode("utf-8", "replace").lstrip("\ufeff")
            return cls(RobotsKind.RULES, text, now + ttl_s)
        if status is not None and 300 <= status < 500:
            return cls(RobotsKind.ALLOW_ALL, "", now + ttl_s)
        failures, since = 1, now
        if previous is not None and previous.failures > 0:  # failing in a row: one more
            failures, since = previous.failures + 1, previous.failing_since
        return cls(RobotsKind.UNAVAILABLE, "", now + retry_s * 2 ** (failures - 1), failures,
                   since)

    def gave_up(self, give_up_s: float) -> bool:
        """An unreachable robots.txt whose next try would start ``give_up_s`` or more after
        its first failure: its host's URLs end instead of waiting longer."""
        return (self.kind is RobotsKind.UNAVAILABLE
                and self.expires_at - self.failing_since >= give_up_s)

    @property
    def parser(self) -> Protego:
        if self._parser is None:
            self._parser = Protego.parse(self.text)
        return self._parser

    def allows(self, url: str, agent: str) -> bool:
        if self.kind is RobotsKind.RULES:
            return bool(self.parser.can_fetch(url, agent))
        return self.kind is RobotsKind.ALLOW_ALL

    def crawl_delay_s(self, agent: str) -> float:
        """The Crawl-delay for ``agent``, clamped to ``MAX_CRAWL_DELAY_S`` (0 when none)."""
        if self.kind is not RobotsKind.RULES:
            return 0.0
        delay = self.parser.crawl_delay(agent)
        return min(float(delay), MAX_CRAWL_DELAY_S) if delay else 0.0

    def pack(self) -> bytes:
        return msgpack.packb([self.kind.value, self.text, self.expires_at, self.failures,
                              self.failing_since])

    @classmethod
    def unpack(cls, raw: bytes) -> RobotsPolicy:
        kind, text, expires_at, failures, *since = msgpack.unpackb(raw)  # older: no since
        return cls(RobotsKind(kind), text, expires_at, failures, since[0] if since else 0.0)


class RobotsCache:
    """origin -> policy, in memory (bounded) over RocksDB; expired policies read as missing."""

    def __init__(self, store: Store, partitions: int, max_in_memory: int = 10_000) -> None:
        self.store = store
        self.partitions = partitions
        self.max_in_memory = max_in_memory
        self.memory: dict[str, RobotsPolicy] = {}

    def get(self, origin: str, now: float | None = None) -> RobotsPolicy | None:
        """The policy of ``origin`` if it is still fresh."""
        policy = self.stored(origin)
        if policy is None or policy.expires_at <= (time.time() if now is None else now):
            return None
        return policy

    def stored(self, origin: str) -> RobotsPolicy | None:
        """The last policy of ``origin``, fresh or not (its failure count matters)."""
        policy = self.memory.get(origin)
        if policy is None:
            raw = self.store.get(self._key(origin))
            if raw is None:
                return None
            policy = self._remember(origin, RobotsPolicy.unpack(raw))
        return policy

    def put(self, origin: str, policy: RobotsPolicy) -> None:
        """Store durably, then cache."""
        wb = self.store.batch()
        wb.put(self._key(origin), policy.pack())
        self.store.write(wb)
        self._remember(origin, policy)

    def forget(self, partition: int) -> None:
        """Forget the policies of ``partition``'s origins (its keys were dropped)."""
        for origin in [o for o in self.memory
                       if partition_of(host_of(o + "/"), self.partitions) == partition]:
            del self.memory[origin]

    def _key(self, origin: str) -> bytes:
        """r <partition of its host> <origin>"""
        return part_key(TABLE, partition_of(host_of(origin + "/"), self.partitions)) + \
            origin.encode()

    def _remember(self, origin: str, policy: RobotsPolicy) -> RobotsPolicy:
        if len(self.memory) >= self.max_in_memory:
            self.memory.pop(next(iter(self.memory)))  # oldest first
        self.memory[origin] = policy
        return policy
