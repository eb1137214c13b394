"""A synthetic web on loopback: many hosts, cross-host links, URL variants, a few traps.

Used by ``raycrawl demo``, ``raycrawl synthweb`` and the tests.  Every host is its own
server on its own loopback address (127.0.0.2, 127.0.0.3, ...), speaking just enough HTTP/1.1
(keep-alive, Content-Length) through an asyncio protocol, so serving costs little CPU.

The web is a pure function of its parameters: :meth:`SyntheticWeb.reachable` computes the URLs
a crawl from the seed must fetch (with their depths), and the server counts every request, so
a test can check that each reachable URL was fetched exactly once and nothing else was.

Page kinds: ``/p/<i>`` HTML pages (every fourth one lives at ``/p/<i>?a=1&b=2``); ``/r/<i>``
redirects (302) to ``/p/<i>``; ``/e/<i>`` answers 500; ``/missing/<i>`` 404; ``/bin/<i>`` is
``application/octet-stream`` with link-like bytes that must not be followed.  Links come in
variants that canonicalise to the same URL: fragments, reordered query, dot segments,
upper-case scheme and host, absolute and relative forms.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

_REASONS = {200: "OK", 302: "Found", 304: "Not Modified", 404: "Not Found",
            500: "Internal Server Error"}


@dataclass(frozen=True)
class Link:
    kind: str  # "p", "r", "e", "missing", "bin"
    host: int
    index: int


class _HTTPProtocol(asyncio.Protocol):
    def __init__(self, web: SyntheticWeb, host: int) -> None:
        self.web, self.host = web, host
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 65536:
            self.transport.close()  # type: ignore[union-attr]
            return
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            line, *lines = head.decode("latin-1").split("\r\n")
            parts = line.split(" ")
            target = parts[1] if len(parts) == 3 else "/"
            headers = {}
            for field in lines:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.web.request_started(self.host)
            status, ctype, extra, body = self.web.respond(self.host, target, headers)
            header = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                      f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
                      "Connection: keep-alive\r\n\r\n").encode("latin-1")
            if self.web.latency_s > 0:
                asyncio.get_running_loop().call_later(self.web.latency_s, self._send,
                                                      header + body)
            else:
                self._send(header + body)

    def _send(self, data: bytes) -> None:
        self.web.request_done(self.host)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SyntheticWeb:
    """``hosts`` x ``pages_per_host`` pages; ``start()`` serves them in a background thread."""

    def __init__(self, hosts: int = 20, pages_per_host: int = 50, out_degree: int = 8,
                 cross_host: float = 0.3, seed: int = 1, page_bytes: int = 0,
                 specials: bool = True, first_address: int = 2,
                 robots: dict[int, str] | None = None, latency_s: float = 0.0) -> None:
        if not 1 <= hosts <= 250:
            raise ValueError("hosts must be between 1 and 250")
        self.hosts, self.pages = hosts, pages_per_host
        self.out_degree, self.cross_host, self.seed = out_degree, cross_host, seed
        self.page_bytes, self.specials, self.first_address = page_bytes, specials, first_address
        self.robots = robots or {}  # host index -> robots.txt text (others answer 404)
        self.latency_s = latency_s  # delay of every response
        self.starts: dict[int, list[float]] = {}  # host -> request arrival times (monotonic)
        self.active: Counter[int] = Counter()  # host -> requests being answered now
        self.max_active: Counter[int] = Counter()  # host -> most requests answered at once
        self.max_active_all = 0  # most requests answered at once, all hosts together
        self.ports: list[int] = []
        self.hits: Counter[str] = Counter()  # "host:port/target" -> requests
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []

    # -- the graph ---------------------------------------------------------------------------
    def address(self, host: int) -> str:
        return f"127.0.0.{self.first_address + host}"

    def origin(self, host: int) -> str:
        return f"http://{self.address(host)}:{self.ports[host]}"

    @staticmethod
    def path(link: Link) -> str:
        if link.kind == "p":
            return f"/p/{link.index}?a=1&b=2" if link.index % 4 == 0 else f"/p/{link.index}"
        return f"/{link.kind}/{link.index}"

    def url(self, link: Link) -> str:
        """The canonical URL of a link target."""
        return self.origin(link.host) + self.path(link)

    @property
    def seed_url(self) -> str:
        return self.url(Link("p", 0, 0))

    def links(self, host: int, index: int) -> list[Link]:
        rng = random.Random(f"{self.seed}:{host}:{index}")
        out = [Link("p", host, (index + 1) % self.pages)]
        for _ in range(self.out_degree - 1):
            target = host if rng.random() >= self.cross_host else rng.randrange(self.hosts)
            roll = rng.random()
            kind = "p"
            if self.specials and roll < 0.12:
                kind = ("r", "e", "missing", "bin")[int(roll / 0.03)]
            out.append(Link(kind, target, rng.randrange(self.pages)))
        return out

    def render_href(self, host: int, link: Link, rng: random.Random) -> str:
        """One of the spellings of ``link`` as seen from a page of ``host``."""
        path = self.path(link)
        style = rng.randrange(6)
        if style == 1:
            path += f"#section-{rng.randrange(5)}"
        elif style == 2 and "?" in path:
            path = path.replace("?a=1&b=2", "?b=2&a=1")
        elif style == 3:
            path = "/x/y/.." + path.replace(f"/{link.kind}/", f"/../{link.kind}/", 1)
        if style == 4 or link.host != host:
            origin = self.origin(link.host)
            if style == 4:
                origin = origin.replace("http://", "HTTP://")
            return origin + path
        return path

    def reachable(self, max_depth: int | None = None,
                  disallowed: tuple[str, ...] = ()) -> dict[str, int]:
        """Canonical URL -> shortest depth of every URL a crawl from the seed must end.

        A redirect's target has the redirect's depth (redirects are not a hop).  URLs whose
        path starts with one of ``disallowed`` are ended (as robots skips) but not followed."""
        start = Link("p", 0, 0)
        depth = {start: 0}
        todo = deque([start])
        while todo:
            node = todo.popleft()
            d = depth[node]
            if disallowed and self.path(node).startswith(disallowed):
                nxt = []
            elif node.kind == "r":
                nxt = [(Link("p", node.host, node.index), d)]
            elif node.kind == "p":
                nxt = [(t, d + 1) for t in self.links(node.host, node.index)]
            else:
                nxt = []
            for target, td in nxt:
                if max_depth is not None and td > max_depth:
                    continue
                if target not in depth or td < depth[target]:
                    depth[target] = td
                    if td == d:
                        todo.appendleft(target)
                    else:
                        todo.append(target)
        return {self.url(link): d for link, d in depth.items()}

    # -- serving -----------------------------------------------------------------------------
    def _page(self, host: int, index: int) -> bytes:
        rng = random.Random(f"render:{self.seed}:{host}:{index}")
        items = [f'<li><a href="{self.render_href(host, link, rng)}">link {n}</a></li>'
                 for n, link in enumerate(self.links(host, index))]
        items.append('<li><a href="mailto:someone@example.com">mail</a>'
                     '<a href="javascript:void(0)">js</a><a href="#top">top</a></li>')
        body = (f"<!DOCTYPE html><html><head><title>host {host} page {index}</title></head>"
                f"<body><h1>Page {index}</h1><ul>{''.join(items)}</ul>")
        if len(body) < self.page_bytes:
            body += "<p>" + "lorem ipsum " * ((self.page_bytes - len(body)) // 12) + "</p>"
        return (body + "</body></html>").encode()

    def respond(self, host: int, target: str, headers: dict[str, str] | None = None
                ) -> tuple[int, str, str, bytes]:
        """(status, content type, extra header lines, body) for a request target (and its
        headers, lower-case names)."""
        with self.lock:
            self.hits[f"{self.address(host)}:{self.ports[host]}{target}"] += 1
        path, _, query = target.partition("?")
        if path == "/robots.txt" and host in self.robots:
            return 200, "text/plain", "", self.robots[host].encode()
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= self.pages:
            return 404, "text/plain", "", b"not found"
        kind, index = parts[0], int(parts[1])
        link = Link(kind, host, index)
        if kind == "p" and target == self.path(link):
            return 200, "text/html; charset=utf-8", "", self._page(host, index)
        if kind == "r" and not query:
            return 302, "text/plain", f"Location: {self.path(Link('p', host, index))}\r\n", b""
        if kind == "e" and not query:
            return 500, "text/plain", "", b"server error"
        if kind == "bin" and not query:
            return 200, "application/octet-stream", "", b'\x00\x01<a href="/p/1">x</a>' * 64
        return 404, "text/plain", "", b"not found"

    def request_started(self, host: int) -> None:
        with self.lock:
            self.starts.setdefault(host, []).append(time.monotonic())
            self.active[host] += 1
            self.max_active[host] = max(self.max_active[host], self.active[host])
            self.max_active_all = max(self.max_active_all, sum(self.active.values()))

    def request_done(self, host: int) -> None:
        with self.lock:
            self.active[host] -= 1

    def min_gap_s(self, host: int) -> float | None:
        """Shortest time between two request arrivals at ``host`` (None below two)."""
        with self.lock:
            times = sorted(self.starts.get(host, []))
        return min((b - a for a, b in zip(times, times[1:])), default=None)

    def start(self) -> SyntheticWeb:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            for host in range(self.hosts):
                server = await loop.create_server(functools.partial(_HTTPProtocol, self, host),
                                                  self.address(host), 0, backlog=1024)
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()'s caller below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="synthweb", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def unexpected_hits(self, expected: dict[str, int], error_attempts: int = 1,
                        robots: bool = False) -> dict[str, int]:
        """Requests that were not exactly what a correct crawl of ``expected`` makes: one per
        URL, ``error_attempts`` per ``/e/`` URL (500s are retried) and, with ``robots``, one
        robots.txt per host reached."""
        with self.lock:
            hits = dict(self.hits)
        wanted = {url.removeprefix("http://"): error_attempts if "/e/" in url else 1
                  for url in expected}
        if robots:
            for url in expected:
                origin = url.removeprefix("http://").split("/", 1)[0]
                wanted[f"{origin}/robots.txt"] = 1
        bad = {k: v for k, v in hits.items() if wanted.get(k) != v}
        bad.update({k: 0 for k in wanted if k not in hits})
        return bad
