"""A hostile web on loopback for the safety tests: one trap per path, robots variants.

Hosts (each its own server): MAIN with the traps, FORBIDDEN that no crawl may reach, RULES
with a robots.txt (Disallow + Crawl-delay), BROKEN whose robots.txt answers 500, PLAIN whose
robots.txt is missing, BADPORT whose robots.txt redirects to a port that cannot exist; FARM, a chain
of hosts each linking the next (generated hosts, a link farm), the second also back to MAIN;
DEAD refuses every connection; ROBOTS_SHAPES, one host per way a robots.txt can fail (each
serves ``/``, ``/x`` and ``/y``); DRIP, whose fast pages ``/a``, ``/b``, ``/c`` are fetched
around a page that drips, each linking a page of LINKED.  Every request is recorded with its
arrival time, and the most requests any host had in flight at once.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import defaultdict

from aiohttp import web

from tests.loopback import LoopbackSites

MAIN, FORBIDDEN, RULES, BROKEN, PLAIN, BADPORT = (f"127.0.0.{n}"
                                                  for n in (50, 51, 52, 53, 54, 56))
FARM = tuple(f"127.0.0.{n}" for n in range(60, 64))  # each host's / links the next one's
DEAD = "127.0.0.55"  # nothing listens there: every connection is refused
# robots.txt shapes: the ones read as "unavailable" (allow all) and "unreachable" (retried,
# then the host's URLs end as robots-unavailable)
ROBOTS_SHAPES = {"refused-redirect": "127.0.0.64", "blocked-redirect": "127.0.0.65",
                 "redirect-loop": "127.0.0.66", "timeout": "127.0.0.67", "reset": "127.0.0.68"}
UNREACHABLE_ROBOTS = ("refused-redirect", "timeout", "reset")
DRIP, LINKED = "127.0.0.70", "127.0.0.71"
DEAD_URLS = [f"http://{DEAD}:9/page/{i}" for i in range(12)]
BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


def html(*hrefs: str) -> web.Response:
    links = "".join(f'<a href="{h}">{h}</a>' for h in hrefs)
    return web.Response(text=f"<html><body>{links}</body></html>", content_type="text/html")


async def drip(request: web.Request) -> web.StreamResponse:
    """A page that drips: one byte every 0.5 s, two minutes at most."""
    resp = web.StreamResponse(headers={"Content-Type": "text/html"})
    await resp.prepare(request)
    for _ in range(240):
        await resp.write(b"x")
        await asyncio.sleep(0.5)
    return resp


class HostileWeb(LoopbackSites):
    addresses = (MAIN, FORBIDDEN, RULES, BROKEN, PLAIN, BADPORT, *FARM,
                 *ROBOTS_SHAPES.values(), DRIP, LINKED)

    def __init__(self) -> None:
        super().__init__()
        self.requests: defaultdict[str, list[tuple[float, str]]] = defaultdict(list)
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.most_in_flight: defaultdict[str, int] = defaultdict(int)

    def hits(self, address: str, path: str | None = None) -> list[float]:
        with self.lock:
            return [t for t, p in self.requests[address] if path is None or p == path]

    def _app(self, address: str) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
            with self.lock:
                self.requests[address].append((time.monotonic(), request.path_qs))
                self.in_flight[address] += 1
                self.most_in_flight[address] = max(self.most_in_flight[address],
                                                   self.in_flight[address])
            try:
                return await handler(request)
            finally:
                with self.lock:
                    self.in_flight[address] -= 1

        app = web.Application(middlewares=[record])
        shapes = {a: name for name, a in ROBOTS_SHAPES.items()}
        routes = (self._farm(FARM.index(address)) if address in FARM else
                  self._robots_shape(shapes[address]) if address in shapes else
                  getattr(self, f"_routes_{address.rsplit('.', 1)[1]}")())
        app.add_routes(routes)
        return app

    # -- MAIN: the traps ---------------------------------------------------------------------
    def _routes_50(self) -> list[web.RouteDef]:
        async def index(request: web.Request) -> web.Response:
            return html("/loop/a", "/chain/0", "/drip", "/endless", "/bomb", "/calendar?day=0",
                        "/flaky", "/busy", "/badbytes", "/binary", "/to-forbidden",
                        "/deep/a/b/a/b/a/b/a/b", "/cal/2020/1", "/trap/calendar/2020/1",
                        "/badbase",
                        self.origin(RULES) + "/", self.origin(BROKEN) + "/",
                        self.origin(PLAIN) + "/", self.origin(BADPORT) + "/",
                        self.origin(FARM[0]) + "/", *DEAD_URLS, self.origin(DRIP) + "/",
                        *(self.origin(a) + "/" for a in ROBOTS_SHAPES.values()))

        async def loop(request: web.Request) -> web.Response:
            other = "b" if request.match_info["x"] == "a" else "a"
            raise web.HTTPFound(f"/loop/{other}")

        async def chain(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"/chain/{int(request.match_info['n']) + 1}")

        async def endless(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/html"})
            await resp.prepare(request)
            chunk = b"<p>" + b"y" * 65536
            for _ in range(4000):  # 256 MiB at most; the crawler hangs up long before
                await resp.write(chunk)
            return resp

        async def bomb(request: web.Request) -> web.Response:
            return web.Response(body=BOMB, headers={"Content-Type": "text/html",
                                                    "Content-Encoding": "gzip"})

        async def calendar(request: web.Request) -> web.Response:
            day = int(request.query.get("day", "0"))
            return html(f"/calendar?day={day + 1}", f"/calendar?day={day - 1}")

        async def path_calendar(request: web.Request) -> web.Response:
            year, month = int(request.match_info["y"]), int(request.match_info["m"])
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            return html(f"/cal/{nxt[0]}/{nxt[1]}", f"/cal/{year + 1}/{month}")

        async def calendar_1d(request: web.Request) -> web.Response:  # the next month only
            year, month = int(request.match_info["y"]), int(request.match_info["m"])
            return html(f"/trap/calendar/{year + month // 12}/{month % 12 + 1}")

        async def badbase(request: web.Request) -> web.Response:
            body = '<html><head><base href="http://[::1"></head><a href="/after-base">x</a>'
            return web.Response(text=body, content_type="text/html")

        async def flaky(request: web.Request) -> web.Response:
            if len(self.hits(MAIN, "/flaky")) == 1:
                return web.Response(status=500, text="try again")
            return html()

        async def busy(request: web.Request) -> web.Response:
            if len(self.hits(MAIN, "/busy")) == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return html()

        async def badbytes(request: web.Request) -> web.Response:
            body = b'<html><a href="/after-bad">x</a>\xff\xfe\xfd\xc3(</html>'
            return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

        async def binary(request: web.Request) -> web.Response:
            return web.Response(body=b'\0<a href="/never">', content_type="image/png")

        async def to_forbidden(request: web.Request) -> web.Response:
            raise web.HTTPFound(self.origin(FORBIDDEN) + "/secret")

        async def plain(request: web.Request) -> web.Response:
            return html()

        async def back(request: web.Request) -> web.Response:  # linked from FARM[1] only
            return html("/after-back")

        return [web.get("/", index), web.get("/loop/{x}", loop), web.get("/chain/{n}", chain),
                web.get("/drip", drip), web.get("/endless", endless), web.get("/bomb", bomb),
                web.get("/calendar", calendar), web.get("/flaky", flaky),
                web.get("/busy", busy), web.get("/badbytes", badbytes),
                web.get("/binary", binary), web.get("/to-forbidden", to_forbidden),
                web.get("/after-bad", plain), web.get("/after-base", plain),
                web.get("/cal/{y:\\d+}/{m:\\d+}", path_calendar), web.get("/badbase", badbase),
                web.get("/trap/calendar/{y:\\d+}/{m:\\d+}", calendar_1d),
                web.get("/back", back), web.get("/after-back", plain)]

    def _routes_51(self) -> list[web.RouteDef]:
        async def secret(request: web.Request) -> web.Response:
            return html()

        return [web.get("/secret", secret)]

    def _routes_52(self) -> list[web.RouteDef]:
        async def robots(request: web.Request) -> web.Response:
            return web.Response(text="User-agent: *\nDisallow: /private\nCrawl-delay: 0.3\n")

        async def index(request: web.Request) -> web.Response:
            return html("/private/1", "/private/2", "/public/1", "/public/2", "/public/3")

        async def page(request: web.Request) -> web.Response:
            return html()

        return [web.get("/robots.txt", robots), web.get("/", index), web.get("/{p:.+}", page)]

    def _routes_53(self) -> list[web.RouteDef]:
        async def robots(request: web.Request) -> web.Response:
            return web.Response(status=500)

        async def index(request: web.Request) -> web.Response:
            return html("/x")

        return [web.get("/robots.txt", robots), web.get("/", index)]

    def _routes_54(self) -> list[web.RouteDef]:
        async def index(request: web.Request) -> web.Response:
            return html("/x")

        async def page(request: web.Request) -> web.Response:
            return html()

        return [web.get("/", index), web.get("/x", page)]

    def _routes_56(self) -> list[web.RouteDef]:
        async def robots(request: web.Request) -> web.Response:
            # set by hand: aiohttp's own redirect class refuses to build this Location
            return web.Response(status=302,
                                headers={"Location": f"http://{BADPORT}:99999/robots.txt"})

        async def index(request: web.Request) -> web.Response:
            return html("/x", "/y")

        async def page(request: web.Request) -> web.Response:
            return html()

        return [web.get("/robots.txt", robots), web.get("/", index), web.get("/x", page),
                web.get("/y", page)]

    # -- a robots.txt per way it can fail ------------------------------------------------------
    def _robots_shape(self, shape: str) -> list[web.RouteDef]:
        async def robots(request: web.Request) -> web.StreamResponse:
            if shape == "refused-redirect":
                return web.Response(status=302, headers={
                    "Location": f"http://{DEAD}:9/robots.txt"})
            if shape == "blocked-redirect":  # the guard refuses it before any connection
                return web.Response(status=302, headers={
                    "Location": "http://10.255.255.1/robots.txt"})
            if shape == "redirect-loop":
                other = "/robots-2.txt" if request.path == "/robots.txt" else "/robots.txt"
                return web.Response(status=302, headers={"Location": other})
            if shape == "timeout":
                await asyncio.sleep(60)  # cancelled when the crawler hangs up
            else:  # reset: the connection closes under the request
                assert request.transport is not None
                request.transport.abort()
            return web.Response(status=500)

        async def index(request: web.Request) -> web.Response:
            return html("/x", "/y")

        async def page(request: web.Request) -> web.Response:
            return html()

        return [web.get("/robots.txt", robots), web.get("/robots-2.txt", robots),
                web.get("/", index), web.get("/x", page), web.get("/y", page)]

    # -- DRIP: fast pages around a slow one --------------------------------------------------
    def _routes_70(self) -> list[web.RouteDef]:
        async def index(request: web.Request) -> web.Response:
            return html("/a", "/b", "/drip", "/c")

        async def fast(request: web.Request) -> web.Response:
            return html(self.origin(LINKED) + "/from-" + request.match_info["p"])

        return [web.get("/", index), web.get("/drip", drip), web.get("/{p:[abc]}", fast)]

    def _routes_71(self) -> list[web.RouteDef]:
        async def page(request: web.Request) -> web.Response:
            return html()

        return [web.get("/{p:.*}", page)]

    # -- FARM: a chain of hosts ----------------------------------------------------------------
    def _farm(self, n: int) -> list[web.RouteDef]:
        async def index(request: web.Request) -> web.Response:
            hrefs = [self.origin(FARM[n + 1]) + "/"] if n + 1 < len(FARM) else []
            if n == 1:
                hrefs.append(self.origin(MAIN) + "/back")
            return html(*hrefs)

        return [web.get("/", index)]
