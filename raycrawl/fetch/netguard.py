"""The address guard: which IP addresses a crawl may connect to.

Only public unicast addresses are allowed, unless an ``allow_network`` CIDR range covers the
address.  The check runs on the addresses a host name resolves to, right before aiohttp
connects to them (see :class:`GuardedResolver`), and on IP-literal hosts, so a name that
resolves to a private address is refused like the literal would be.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::254/128"))
# IPv6 ranges that reach IPv4 or old private space: 6to4 embeds any IPv4 address (127.0.0.1 as
# 2002:7f00:1::), site-local is deprecated private space.
_IPV6_BLOCKED = ((ipaddress.ip_network("2002::/16"), "6to4"),
                 (ipaddress.ip_network("fec0::/10"), "site-local"))


class BlockedAddress(OSError):
    """A connection to a non-public address outside ``allow_network`` was refused."""


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not public unicast (``loopback``, ``private``, ...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return classify(address.ipv4_mapped)
    if any(address in net for net in _METADATA):
        return "metadata"
    if isinstance(address, ipaddress.IPv6Address):
        for net, kind in _IPV6_BLOCKED:
            if address in net:
                return kind
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network(
            "100.64.0.0/10"):
        return "cgnat"
    if not address.is_global:
        return "non-global"
    return None


LITERALS_KEPT = 4096  # hosts whose literal check is remembered (all forgotten when full)


class AddressGuard:
    """Decides whether an address may be connected to."""

    def __init__(self, allow_network: tuple[str, ...] = ()) -> None:
        self.allowed = [ipaddress.ip_network(c, strict=False) for c in allow_network]
        self._literals: dict[str, str | None] = {}  # host -> check_host_literal's answer

    def refusal(self, address: str) -> str | None:
        """None if ``address`` may be connected to, else the reason it may not."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"not an IP address: {address!r}"
        plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if any(plain in net for net in self.allowed):
            return None
        kind = classify(ip)
        return None if kind is None else f"{kind} address {address}"

    def check_host_literal(self, host: str) -> str | None:
        """The refusal for a host that is an IP literal; None for names (checked on resolve).
        Asked before every request: the answers for the last hosts are kept (parsing the
        address was 2-3% of a fetch worker's CPU on small pages)."""
        try:
            return self._literals[host]
        except KeyError:
            pass
        if len(self._literals) >= LITERALS_KEPT:
            self._literals.clear()
        answer = self._literals[host] = self._check_literal(host)
        return answer

    def _check_literal(self, host: str) -> str | None:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        return self.refusal(host.strip("[]"))


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then drops refused addresses; when none is
    left the connection fails with :class:`BlockedAddress`."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await self.inner.resolve(host, port, family)
        allowed = [i for i in infos if self.guard.refusal(i["host"]) is None]
        if not allowed:
            reason = self.guard.refusal(infos[0]["host"]) if infos else "no address"
            raise BlockedAddress(f"{host}: {reason}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()
