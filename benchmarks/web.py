"""The benchmark web: deterministic pages from (seed, host, page), served fast on many loopback
addresses by one small asyncio protocol server (uvloop when installed).

Host ``h`` listens on ``127.1.x.y`` (``x.y`` = h + 1), all hosts on one port.  Page ``i`` of a
host (``/p/i``) is about ``page_bytes`` of HTML with ``out_degree`` links: a share
``same_host`` of them to pages of the same host (relative hrefs), the rest to pages of other hosts
(absolute URLs).  Two links are fixed, ``/p/(i+1)`` and page 0 of the next host, so every page is
reachable from the seed ``http://127.1.0.1:PORT/p/0`` and the reachable set is known without a
graph search.  Every 50th page also links a 404 (``/e/i``) and a 302 (``/r/i``, to a known page);
they count in the reachable set.  The filler text is rendered once at start; a response costs the
link list and a join.

The server counts hits per URL, so coverage and duplicate fetches are measured the same way for
every crawler.  ``GET /__stats`` on the control address answers JSON counters, including the
server's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass

import xxhash

EXTRA_EVERY = 50  # pages i with i % 50 == 25 link /e/i, with i % 50 == 30 link /r/i
ERROR_AT, REDIRECT_AT = 25, 30
_CHUNKS = 10  # links are spread over the page in this many groups


@dataclass(frozen=True)
class WebSpec:
    hosts: int = 100
    pages: int = 100  # per host
    page_bytes: int = 50_000
    out_degree: int = 100
    same_host: float = 0.7
    seed: int = 1
    latency_ms: float = 0.0  # median of a lognormal per-response delay; 0: none
    latency_sigma: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.hosts <= 65_000 or self.pages < 2 or self.out_degree < 2:
            raise ValueError("need 1..65000 hosts, >= 2 pages per host, out-degree >= 2")

    @property
    def urls(self) -> int:
        """The size of the reachable set: every page, plus the 404s and redirects."""
        extras = sum(1 for i in range(self.pages) if i % EXTRA_EVERY in (ERROR_AT, REDIRECT_AT))
        return self.hosts * (self.pages + extras)


def host_ip(h: int) -> str:
    n = h + 1
    return f"127.1.{n >> 8}.{n & 255}"


def host_index(ip: str) -> int:
    _, _, x, y = ip.split(".")
    return (int(x) << 8) + int(y) - 1


def page_links(spec: WebSpec, h: int, i: int) -> list[tuple[int, int]]:
    """(host, page) targets of page ``i`` of host ``h``, deterministic in (seed, h, i)."""
    rng = random.Random(xxhash.xxh64_intdigest(f"{spec.seed}/{h}/{i}".encode()))
    same = max(1, round(spec.out_degree * spec.same_host))
    out: list[tuple[int, int]] = [(h, (i + 1) % spec.pages), ((h + 1) % spec.hosts, 0)]
    pages, hosts = spec.pages, spec.hosts
    out += [(h, int(rng.random() * pages)) for _ in range(same - 1)]
    out += [(int(rng.random() * hosts), int(rng.random() * pages))
            for _ in range(spec.out_degree - len(out))]
    return out


def _filler(spec: WebSpec) -> list[bytes]:
    """Text and markup that fill a page to about ``page_bytes``, in ``_CHUNKS`` pieces.

    Each piece ends past its share by up to a paragraph plus its heading: 3% of a 50 KB page,
    a fifth of an 8 KB one; so small pages get shorter paragraphs, and a page more than 5% over
    is filled again with that excess taken off (the default web's pages, 40-word paragraphs
    within 5% at the first try, are as they always were)."""
    link_bytes = spec.out_degree * 48
    budget = spec.page_bytes
    for _ in range(8):
        chunks = _fill(spec, max(0, budget - link_bytes - 300) // _CHUNKS)
        size = sum(map(len, chunks)) + link_bytes + 300
        if size <= 1.05 * spec.page_bytes or budget <= 0:
            break
        budget -= size - spec.page_bytes
    return chunks


def _fill(spec: WebSpec, target: int) -> list[bytes]:
    rng = random.Random(spec.seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    per_para = max(5, min(40, target // 70))  # 40 words (~280 bytes), fewer on small pages
    chunks = []
    for c in range(_CHUNKS):
        parts, size = [f'<div class="s{c}"><h2>Section {c}</h2>'], 0
        while size < target:
            para = " ".join(rng.choice(words) for _ in range(per_para))
            piece = f"<p>{para} <b>{rng.choice(words)}</b> <i>{rng.choice(words)}</i></p>\n"
            parts.append(piece)
            size += len(piece)
        parts.append("</div>\n")
        chunks.append("".join(parts).encode())
    return chunks


class Web:
    """Rendering and hit counting for one :class:`WebSpec` on one port."""

    def __init__(self, spec: WebSpec, port: int) -> None:
        self.spec, self.port = spec, port
        self.filler = _filler(spec)
        n = spec.hosts * spec.pages
        self.page_hits = bytearray(n)
        self.extra_hits = bytearray(n)
        self.hits = self.extra_total = self.page_total = 0
        self.unexpected = 0
        self.bytes_sent = 0
        self.started = time.monotonic()

    def url(self, h: int, i: int, kind: str = "p") -> str:
        return f"http://{host_ip(h)}:{self.port}/{kind}/{i}"

    def seed(self) -> str:
        return self.url(0, 0)

    def render(self, h: int, i: int) -> bytes:
        spec = self.spec
        hrefs = []
        for th, ti in page_links(spec, h, i):
            hrefs.append(f"/p/{ti}" if th == h else self.url(th, ti))
        if i % EXTRA_EVERY == ERROR_AT:
            hrefs.append(f"/e/{i}")
        if i % EXTRA_EVERY == REDIRECT_AT:
            hrefs.append(f"/r/{i}")
        per = math.ceil(len(hrefs) / _CHUNKS)
        parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>host {h} page {i}"
                 f"</title></head><body>\n".encode()]
        for c, filler in enumerate(self.filler):
            parts.append(filler)
            group = hrefs[c * per:(c + 1) * per]
            if group:
                items = "".join(f'<li><a href="{u}">link {n}</a></li>'
                                for n, u in enumerate(group, c * per))
                parts.append(f"<ul>{items}</ul>\n".encode())
        parts.append(b"</body></html>\n")
        return b"".join(parts)

    def respond(self, h: int, path: bytes) -> tuple[int, bytes, bytes]:
        """(status, extra headers, body) for ``path`` on host ``h``; counts the hit."""
        self.hits += 1
        kind, _, number = path.decode("latin-1").partition("?")[0].strip("/").partition("/")
        spec = self.spec
        if number.isdigit() and int(number) < spec.pages and 0 <= h < spec.hosts:
            i = int(number)
            slot = h * spec.pages + i
            if kind == "p":
                self.page_total += 1
                self.page_hits[slot] = min(255, self.page_hits[slot] + 1)
                return 200, b"Content-Type: text/html; charset=utf-8\r\n", self.render(h, i)
            if kind == "e" and i % EXTRA_EVERY == ERROR_AT:
                self.extra_total += 1
                self.extra_hits[slot] = min(255, self.extra_hits[slot] + 1)
                return 404, b"Content-Type: text/html\r\n", b"<html>not found</html>"
            if kind == "r" and i % EXTRA_EVERY == REDIRECT_AT:
                self.extra_total += 1
                self.extra_hits[slot] = min(255, self.extra_hits[slot] + 1)
                target = (i * 7 + 3) % spec.pages
                return 302, f"Location: /p/{target}\r\n".encode(), b""
        if path == b"/robots.txt":
            return 404, b"", b""
        self.unexpected += 1
        return 404, b"", b""

    def stats(self) -> dict[str, object]:
        spec = self.spec
        n = spec.hosts * spec.pages
        distinct = (n - self.page_hits.count(0)) + (n - self.extra_hits.count(0))
        valid = self.page_total + self.extra_total
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"time": time.monotonic() - self.started, "requests": self.hits,
                "fetches": valid, "distinct": distinct, "duplicates": valid - distinct,
                "reachable": spec.urls, "coverage": distinct / spec.urls,
                "unexpected": self.unexpected, "bytes_sent": self.bytes_sent,
                "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}


_REASONS = {200: b"OK", 302: b"Found", 404: b"Not Found"}


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, GET only, responses in request order."""

    def __init__(self, web: Web, latency: tuple[float, float] | None, rng: random.Random,
                 control: bool = False) -> None:
        self.web, self.latency, self.rng, self.control = web, latency, rng, control
        self.buffer = b""
        self.last_due = 0.0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.host = host_index(transport.get_extra_info("sockname")[0])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            request_line = head.split(b"\r\n", 1)[0].split(b" ")
            path = request_line[1] if len(request_line) == 3 else b"/"
            close = b"connection: close" in head.lower()
            self._answer(path, close)

    def _answer(self, path: bytes, close: bool) -> None:
        if self.control:
            status, headers, body = 200, b"Content-Type: application/json\r\n", json.dumps(
                self.web.stats()).encode()
            close = True
        else:
            status, headers, body = self.web.respond(self.host, path)
        message = b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status")), headers,
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n" if close else b"\r\n", body])
        self.web.bytes_sent += len(message)
        if close:
            self.closing = True
        if self.latency is None or self.control:
            self._send(message, close)
            return
        loop = asyncio.get_running_loop()
        mu, sigma = self.latency
        due = max(loop.time() + self.rng.lognormvariate(mu, sigma), self.last_due)
        self.last_due = due
        loop.call_at(due, self._send, message, close)

    def _send(self, message: bytes, close: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(message)
        if close:
            self.transport.close()


def _listen(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(spec: WebSpec, ready: dict[str, object]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    first = _listen(host_ip(0), 0)
    port = first.getsockname()[1]
    sockets = [first] + [_listen(host_ip(h), port) for h in range(1, spec.hosts)]
    web = Web(spec, port)
    loop = asyncio.get_running_loop()
    latency = (math.log(spec.latency_ms / 1000), spec.latency_sigma) if spec.latency_ms else None
    rng = random.Random(spec.seed)
    for sock in sockets:
        await loop.create_server(lambda: _Connection(web, latency, rng), sock=sock)
    control = _listen("127.0.0.1", 0)
    await loop.create_server(lambda: _Connection(web, None, rng, control=True), sock=control)
    ready.update(port=port, seed=web.seed(), reachable=spec.urls,
                 control=f"http://127.0.0.1:{control.getsockname()[1]}/__stats", spec=asdict(spec))
    print(json.dumps(ready), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, value in asdict(WebSpec()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    spec = WebSpec(**vars(parser.parse_args(argv)))
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(spec, {}))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
