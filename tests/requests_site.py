"""A site on loopback that needs real requests: headers, a POSTed form, cookies; and a proxy.

``SHOP`` serves ``/`` (links), ``/echo`` (answers with the headers it got), ``/form`` (GET and
POST, answers with what it got), ``/login`` (sets a cookie, then links ``/account``) and
``/account`` (200 with the cookie, 403 without).  ``PROXY`` answers every request itself,
recording the request target it got (absolute-form, as clients send to a proxy).
"""

from __future__ import annotations

from aiohttp import web

from tests.loopback import LoopbackSites

SHOP, PROXY = "127.0.0.60", "127.0.0.61"


class RequestsSite(LoopbackSites):
    addresses = (SHOP, PROXY)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, object]] = []  # every request: address, method, path, ...

    def origin(self, address: str = SHOP) -> str:
        return super().origin(address)

    def requests(self, address: str = SHOP, path: str | None = None) -> list[dict[str, object]]:
        with self.lock:
            return [r for r in self.seen if r["address"] == address
                    and (path is None or r["path"] == path)]

    def _app(self, address: str) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
            body = await request.read()
            with self.lock:
                self.seen.append({"address": address, "method": request.method,
                                  "path": request.path, "target": request.raw_path,
                                  "headers": dict(request.headers), "body": body,
                                  "cookies": dict(request.cookies)})
            return await handler(request)

        app = web.Application(middlewares=[record])
        if address == PROXY:
            async def proxied(request: web.Request) -> web.Response:
                return web.Response(text="<html><title>via proxy</title></html>",
                                    content_type="text/html")
            app.router.add_route("*", "/{tail:.*}", proxied)
            return app

        async def index(request: web.Request) -> web.Response:
            return web.Response(text='<html><a href="/echo">e</a><a href="/form">f</a>'
                                     '<a href="/login">l</a></html>', content_type="text/html")

        async def echo(request: web.Request) -> web.Response:
            return web.json_response({"token": request.headers.get("X-Token")})

        async def form(request: web.Request) -> web.Response:
            data = await request.post() if request.method == "POST" else {}
            return web.json_response({"method": request.method, "q": data.get("q")})

        async def login(request: web.Request) -> web.Response:
            resp = web.Response(text='<html><a href="/account">account</a></html>',
                                content_type="text/html")
            resp.set_cookie("session", "s3cret", path="/")
            return resp

        async def account(request: web.Request) -> web.Response:
            if request.cookies.get("session") != "s3cret":
                return web.Response(status=403, text="log in first")
            return web.Response(text="<html><title>your account</title></html>",
                                content_type="text/html")

        app.add_routes([web.get("/", index), web.get("/echo", echo),
                        web.route("*", "/form", form), web.get("/login", login),
                        web.get("/account", account)])
        return app
