"""aiohttp apps served on loopback addresses from a background thread, for the test webs."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class LoopbackSites:
    """Serves ``self._app(address)`` on each of ``addresses``, ports picked by the OS."""

    addresses: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runners: list[web.AppRunner] = []

    def origin(self, address: str) -> str:
        return f"http://{address}:{self.ports[address]}"

    def _app(self, address: str) -> web.Application:
        raise NotImplementedError

    def start(self):  # type: ignore[no-untyped-def]
        ready = threading.Event()

        async def serve() -> None:
            for address in self.addresses:
                # a handler stops when its client hangs up (a cut-off drip is not in flight)
                runner = web.AppRunner(self._app(address), access_log=None,
                                       handler_cancellation=True)
                await runner.setup()
                site = web.TCPSite(runner, address, 0)
                await site.start()
                self._runners.append(runner)
                self.ports[address] = site._server.sockets[0].getsockname()[1]  # type: ignore

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name=type(self).__name__, daemon=True).start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
