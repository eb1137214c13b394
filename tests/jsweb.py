"""A web whose links exist only once its JavaScript ran, on loopback: each host's front page
writes its links with an inline script, every other page with an external one (``/app.js``,
which the browser must load); ``/nav`` moves itself elsewhere with ``location``."""

from __future__ import annotations

import threading

from aiohttp import web

from tests.loopback import LoopbackSites

FRONT = """<html><head><title>front</title></head><body><h1 id="title"></h1>
<script>
document.getElementById("title").textContent = "front of " + location.host;
for (let i = 0; i < PAGES; i++) {
  const a = document.createElement("a"); a.href = "/p/" + i; a.textContent = "page " + i;
  document.body.appendChild(a);
}
OTHER
</script><noscript>no links without JavaScript</noscript></body></html>"""

PAGE = """<html><head><title>page</title><script src="/app.js"></script></head>
<body data-i="INDEX" data-pages="PAGES"><h1 id="title"></h1></body></html>"""

APP = """document.addEventListener("DOMContentLoaded", () => {
  const b = document.body, i = +b.dataset.i, n = +b.dataset.pages;
  document.getElementById("title").textContent = "page " + i;
  for (const j of [2 * i + 1, 2 * i + 2]) {
    if (j < n) {
      const a = document.createElement("a"); a.href = "/p/" + j; b.appendChild(a);
    }
  }
});"""

NAV = """<html><body><script>location.href = "/p/0";</script></body></html>"""


class JSWeb(LoopbackSites):
    """``pages`` pages a host (plus its front page) on each of ``addresses``; the first
    host's front page links to the others' front pages (by script too)."""

    def __init__(self, addresses: tuple[str, ...] = ("127.0.0.1",), pages: int = 6,
                 delay_s: float = 0.0) -> None:
        super().__init__()
        self.addresses, self.pages, self.delay_s = addresses, pages, delay_s
        self.hits: dict[str, int] = {}
        self._hits_lock = threading.Lock()

    @property
    def seed_url(self) -> str:
        return self.origin(self.addresses[0]) + "/"

    def reachable(self) -> set[str]:
        """Every URL a crawl that runs the scripts reaches from the seed."""
        return {self.origin(a) + path for a in self.addresses
                for path in ["/", *(f"/p/{i}" for i in range(self.pages))]}

    def _app(self, address: str) -> web.Application:
        import asyncio

        others = [a for a in self.addresses if a != address] if address == self.addresses[0] \
            else []

        def count(request: web.Request) -> None:
            with self._hits_lock:
                key = f"{address}{request.path}"
                self.hits[key] = self.hits.get(key, 0) + 1

        async def front(request: web.Request) -> web.Response:
            count(request)
            other = "".join(
                f'{{const a = document.createElement("a"); a.href = "{self.origin(o)}/"; '
                f'document.body.appendChild(a);}}\n' for o in others)
            return web.Response(text=FRONT.replace("PAGES", str(self.pages))
                                .replace("OTHER", other), content_type="text/html")

        async def page(request: web.Request) -> web.Response:
            count(request)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            i = int(request.match_info["i"])
            if i >= self.pages:
                raise web.HTTPNotFound()
            return web.Response(text=PAGE.replace("INDEX", str(i))
                                .replace("PAGES", str(self.pages)), content_type="text/html")

        async def app(request: web.Request) -> web.Response:
            count(request)
            return web.Response(text=APP, content_type="application/javascript")

        async def nav(request: web.Request) -> web.Response:
            return web.Response(text=NAV, content_type="text/html")

        async def robots(_: web.Request) -> web.Response:
            return web.Response(text="User-agent: *\nAllow: /\n")

        application = web.Application()
        application.router.add_get("/", front)
        application.router.add_get(r"/p/{i:\d+}", page)
        application.router.add_get("/app.js", app)
        application.router.add_get("/nav", nav)
        application.router.add_get("/robots.txt", robots)
        return application
