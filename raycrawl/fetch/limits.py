"""How many requests a fetch worker has in flight: in all, and per IP address (``per_ip``).

``per_host`` keeps each host polite; hosts that resolve to one address (virtual hosts of one
server, a shared host's many sites) would each be polite on their own and together load the
server as many times over.  With ``per_ip`` a fetch worker sends at most that many requests at
once to one IP address, whichever hosts they are for; the host's own ``per_host`` and delay
still hold.  The address is the host itself for an IP literal, else its first address from
DNS (cached a minute); a name that does not resolve is not limited here (its request fails on
its own).  Each fetch worker counts its own requests: with W fetch workers an address sees at
most ``per_ip`` × W at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

DNS_TTL_S = 60.0
AUTO_MAX_DELAY_S = 60.0  # --auto-throttle never spaces a host's requests further apart


def throttled(delay_s: float, took_s: float, usable: bool, floor_s: float) -> float:
    """``--auto-throttle``'s next delay of a host whose delay is ``delay_s`` and whose last
    request took ``took_s``: halfway to ``took_s`` (Scrapy's AutoThrottle with a target of one
    request at a time, Heritrix's delay factor 1), never shorter after an answer that was not
    ``usable`` (a 429/5xx, a timeout), within [``floor_s``, ``AUTO_MAX_DELAY_S``].  The DB
    worker applies it between batches, the fetch worker within one."""
    new = (delay_s + min(took_s, AUTO_MAX_DELAY_S)) / 2
    if not usable and new < delay_s:
        return delay_s
    return max(floor_s, new)


class RequestLimit:
    """The slots requests take: ``concurrency`` in all and, with ``per_ip``, ``per_ip`` per
    address (taken first, so a request waiting for its address holds no slot of the others)."""

    def __init__(self, concurrency: int, per_ip: int | None = None) -> None:
        self.total = asyncio.Semaphore(concurrency)
        self.per_ip = per_ip
        self.addresses: dict[str, asyncio.Semaphore] = {}
        self.users: dict[str, int] = {}  # address -> requests holding or waiting for it
        self.names: dict[str, tuple[str | None, float]] = {}  # host -> (address, expires)

    def slot(self, host: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """A request slot for ``host`` (a URL's host: a name or an IP literal), to hold with
        ``async with``.  Without ``per_ip``, the total's semaphore itself (a generator-based
        context manager around it cost 5 µs a request)."""
        return self.total if self.per_ip is None else self._ip_slot(host)

    @contextlib.asynccontextmanager
    async def _ip_slot(self, host: str) -> AsyncIterator[None]:
        address = await self.address(host)
        if address is None:
            async with self.total:
                yield
            return
        self.users[address] = self.users.get(address, 0) + 1
        sem = self.addresses.setdefault(address, asyncio.Semaphore(self.per_ip or 1))
        try:
            async with sem, self.total:
                yield
        finally:
            self.users[address] -= 1
            if not self.users[address]:  # nobody holds or waits: forget it
                del self.users[address], self.addresses[address]

    async def address(self, host: str) -> str | None:
        """The IP address requests to ``host`` go to (None: it does not resolve)."""
        bare = host.strip("[]")
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            pass
        now = time.monotonic()
        known = self.names.get(host)
        if known is not None and known[1] > now:
            return known[0]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(bare, None,
                                                                 type=socket.SOCK_STREAM)
            address: str | None = str(infos[0][4][0]) if infos else None
        except (OSError, UnicodeError):
            address = None
        if len(self.names) > 10_000:
            self.names = {h: v for h, v in self.names.items() if v[1] > now}
        self.names[host] = (address, now + DNS_TTL_S)
        return address
