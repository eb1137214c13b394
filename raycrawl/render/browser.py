"""One headless Chromium driven by Playwright: renders pages whose main document the fetch
path already fetched (no Ray here; ``actors.browser`` runs one per actor).

The browser never fetches the main document itself: the request for it is answered with the
status, headers and body the HTTP path got (its robots.txt, address guard, conditional
request, cookies, redirects, body cap and WARC record all stand as for any page).  What the
page loads besides (scripts, XHR, CSS) the browser fetches, each request through the address
guard; images, media and fonts are not loaded unless a screenshot is asked for.  A navigation
the page's scripts start (``location = ...``) is not followed: its URL is reported, as a link.

Pages render in tabs (a browser context with one page), as many as the pages rendering at
once; a tab renders up to ``TAB_PAGES`` pages, then is closed.  Between pages it is blanked
(the last page's scripts stop), and its cookies are cleared when its host changes (storage is
per origin, as in any browser).  The browser is replaced after
``restart_after`` pages (the old one closes once its pages end) and whenever its process dies.
A page that was rendering when its browser or its renderer process died gets
:class:`BrowserCrashed`: an infrastructure fault, not the URL's (its caller renders it again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import ipaddress
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from raycrawl.fetch.netguard import AddressGuard
from raycrawl.render.spec import CRASH_TRIES, LAUNCH_TIMEOUT_S, RenderSpec

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARGS = ("--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-extensions", "--mute-audio")
BLOCKED_TYPES = frozenset({"image", "media", "font"})
PROBE_TIMEOUT_S = 5.0  # a page that does not evaluate "1" in this long is not alive
CLOSE_TIMEOUT_S = 20.0  # a browser closing on a loaded machine; Playwright.stop() ends any left
HOSTS_CACHED = 4096  # host names whose guard verdict a browser remembers
TAB_PAGES = 50  # pages a tab (a context and its page) renders before it is closed


class BrowserCrashed(Exception):
    """The browser (or the page's renderer process) died under a render."""


class BrowserUnavailable(Exception):
    """No browser to start (a one-line reason: Playwright or Chromium not installed, or, from
    :func:`check_browser`, one that does not start)."""


def find_browser(path: str | None = None) -> str:
    """The Chromium executable: ``path`` if given, else the first of :data:`BROWSERS` on
    ``PATH``; :class:`BrowserUnavailable` names what to install when there is none (or when
    Playwright is not installed)."""
    if importlib.util.find_spec("playwright") is None:
        raise BrowserUnavailable("Playwright is not installed (pip install 'raycrawl[render]')")
    if path:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BrowserUnavailable(f"browser {path!r} is not an executable file")
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable("no Chromium found on PATH (install Debian's chromium package, "
                             "or pass --browser PATH)")


def check_browser(path: str | None = None) -> str:
    """The Chromium executable, started once here to show it works (on the machine that
    calls this); :class:`BrowserUnavailable` with a one-line reason if it does not."""
    executable = find_browser(path)

    async def start() -> str | None:
        from playwright.async_api import async_playwright

        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                                   args=list(ARGS),
                                                   timeout=LAUNCH_TIMEOUT_S * 1000)
                await browser.close()
        except Exception as exc:  # noqa: BLE001 (whatever stops it: the reason is said)
            return _one_line(exc)
        return None

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # (a notebook's loop may run here)
        why = pool.submit(asyncio.run, start()).result()
    if why is not None:
        raise BrowserUnavailable(f"{executable} does not start: {why}")
    return executable


@dataclass(frozen=True, slots=True)
class RenderJob:
    """A page to render: the main document as the HTTP path fetched it."""

    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    spec: RenderSpec = RenderSpec()
    cookies: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page rendered: its DOM (UTF-8 HTML), the URLs its scripts navigated to, the PNG
    asked for; or ``error`` (``timeout``: the wait was not over in the spec's timeout;
    ``script``: the page or its spec's script failed) with a one-line ``detail``."""

    html: bytes = b""
    navigations: tuple[str, ...] = ()
    screenshot: bytes | None = None
    error: str | None = None
    detail: str | None = None
    took_s: float = 0.0


class Renderer(Protocol):
    """What the fetch path renders with: a :class:`Browser`, :class:`LocalRenderer` or a
    fetch worker's browser actor (``actors.browser.BrowserClient``)."""

    async def render(self, job: RenderJob) -> Rendered: ...




class LocalRenderer:
    """A browser of this process, started at the first render (``raycrawl parse``, fetches
    without Ray); a page whose browser died under it is rendered again on a new one, up to
    :data:`CRASH_TRIES` times."""

    def __init__(self, executable: str | None = None, user_agent: str = "raycrawl",
                 guard: AddressGuard | None = None, restart_after: int = 200,
                 concurrency: int = 4) -> None:
        self.args = (executable, user_agent, guard, restart_after, concurrency)
        self.browser: Browser | None = None

    async def render(self, job: RenderJob) -> Rendered:
        if self.browser is None:
            self.browser = Browser(*self.args)
        for _ in range(CRASH_TRIES - 1):
            with contextlib.suppress(BrowserCrashed):
                return await self.browser.render(job)
        return await self.browser.render(job)

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
            self.browser = None


class _Instance:
    """One launched browser and the pages rendering on it."""

    def __init__(self, browser: Any) -> None:
        self.browser, self.pages, self.served = browser, 0, 0
        self.dead = False
        browser.on("disconnected", self._gone)

    def _gone(self, _browser: Any) -> None:
        self.dead = True


class _Tab:
    """A browser context with one page, kept for the next pages: a new context and page
    cost 2.5 times the render of a simple page (benchmarks/README.md, rendering)."""

    def __init__(self, inst: _Instance, host: str, context: Any, page: Any) -> None:
        self.inst, self.host, self.context, self.page = inst, host, context, page
        self.uses = 0
        self.job: RenderJob | None = None
        self.main_done = False
        self.navigations: list[str] = []
        self.navigated, self.crashed = asyncio.Event(), asyncio.Event()
        page.on("crash", lambda _page: self.crashed.set())

    def begin(self, job: RenderJob) -> None:
        self.job, self.main_done, self.navigations = job, False, []
        self.navigated.clear()
        self.uses += 1

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), CLOSE_TIMEOUT_S)


class Browser:
    """Renders :class:`RenderJob` s on one Chromium (see the module docstring); at most
    ``concurrency`` pages at once."""

    def __init__(self, executable: str | None = None, user_agent: str = "raycrawl",
                 guard: AddressGuard | None = None, restart_after: int = 200,
                 concurrency: int = 4, viewport: tuple[int, int] = (1280, 800)) -> None:
        self.executable = find_browser(executable)
        self.user_agent, self.guard = user_agent, guard or AddressGuard()
        self.restart_after, self.viewport = max(1, restart_after), viewport
        self.concurrency = max(1, concurrency)
        self.slots = asyncio.Semaphore(self.concurrency)
        self.playwright: Any = None
        self.current: _Instance | None = None
        self.launches = 0
        self.crashes = 0
        self._launching = asyncio.Lock()
        self._hosts: dict[str, str | None] = {}
        self._idle: list[_Tab] = []  # at most ``concurrency``: one per page at once

    async def render(self, job: RenderJob) -> Rendered:
        """Render ``job``; :class:`BrowserCrashed` if the browser died under it,
        :class:`BrowserUnavailable` if none can be started."""
        async with self.slots:
            inst = await self._instance()
            inst.pages += 1
            inst.served += 1
            try:
                return await self._render_on(inst, job)
            finally:
                inst.pages -= 1
                if inst is not self.current and inst.pages == 0:
                    await self._close(inst)

    async def _instance(self) -> _Instance:
        """The browser to render on: a new one when there is none, when it died, or when it
        served ``restart_after`` pages (the old one is closed when its last page ends)."""
        async with self._launching:
            inst = self.current
            if inst is not None and not inst.dead and inst.served < self.restart_after:
                return inst
            if inst is not None:
                self.current = None
                if inst.pages == 0:
                    await self._close(inst)
            self.current = await self._launch()
            return self.current

    async def _launch(self) -> _Instance:
        from playwright.async_api import async_playwright

        try:
            if self.playwright is None:
                self.playwright = await async_playwright().start()
            browser = await self.playwright.chromium.launch(
                executable_path=self.executable, headless=True, args=list(ARGS),
                timeout=LAUNCH_TIMEOUT_S * 1000)
        except Exception as exc:  # noqa: BLE001
            # Found but not started: a crash at start, a machine out of memory or processes.
            # Infrastructure (the page is rendered again, its batch run again); a browser that
            # never starts on this machine is what check_browser tells before a crawl starts.
            raise BrowserCrashed(f"{self.executable} did not start: {_one_line(exc)}") from None
        self.launches += 1
        return _Instance(browser)

    async def _close(self, inst: _Instance) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(inst.browser.close(), CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        """Close the browser and Playwright's driver."""
        for tab in self._idle:
            await tab.close()
        self._idle.clear()
        if self.current is not None:
            await self._close(self.current)
            self.current = None
        if self.playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.playwright.stop(), CLOSE_TIMEOUT_S)
            self.playwright = None

    async def _render_on(self, inst: _Instance, job: RenderJob) -> Rendered:
        from playwright.async_api import Error
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        started = time.monotonic()
        spec = job.spec
        tab = await self._tab(inst, job)
        keep = False
        try:
            page = tab.page
            page.set_default_timeout(spec.timeout_s * 1000)
            deadline = started + spec.timeout_s
            try:
                if job.cookies:
                    await tab.context.add_cookies([{"name": k, "value": v, "url": job.url}
                                                   for k, v in job.cookies])
                await page.goto(job.url, wait_until="commit", timeout=spec.timeout_s * 1000)
                await _settle(page, spec.wait, deadline, tab.navigated)
                if spec.wait_for:
                    await page.wait_for_selector(spec.wait_for, state="attached",
                                                 timeout=_ms_left(deadline))
                if spec.script:
                    await page.evaluate(spec.script)
                html = (await page.content()).encode("utf-8")
                shot = (await page.screenshot(type="png", timeout=_ms_left(deadline))
                        if spec.screenshot else None)
            except PlaywrightTimeout as exc:
                if not await _alive(inst, tab):
                    self.crashes += 1
                    raise BrowserCrashed("the browser died while rendering") from None
                return Rendered(error="timeout", detail=_one_line(exc),
                                took_s=time.monotonic() - started)
            except Error as exc:
                if _is_crash(exc) or not await _alive(inst, tab):
                    self.crashes += 1
                    raise BrowserCrashed(_one_line(exc)) from None
                return Rendered(error="script", detail=_one_line(exc),
                                took_s=time.monotonic() - started)
            keep = True
            return Rendered(html, tuple(tab.navigations), shot,
                            took_s=time.monotonic() - started)
        finally:
            await self._done(tab, keep)

    async def _tab(self, inst: _Instance, job: RenderJob) -> _Tab:
        """An idle tab of ``inst`` (the one that rendered the job's host last, if idle),
        blanked, its cookies cleared if it served another host; else a new one.  Idle tabs of
        a browser no longer current are closed first."""
        from playwright.async_api import Error

        stale = [t for t in self._idle if t.inst is not inst]
        self._idle = [t for t in self._idle if t.inst is inst]
        for idle in stale:
            await idle.close()
        host = urlsplit(job.url).netloc
        tab = next((t for t in self._idle if t.host == host), None) or (
            self._idle[-1] if self._idle else None)
        try:
            if tab is not None:
                self._idle.remove(tab)
                await tab.page.goto("about:blank")  # the last page's scripts stop
                if tab.host != host:
                    await tab.context.clear_cookies()
                    tab.host = host
            else:
                context = await inst.browser.new_context(
                    user_agent=self.user_agent, java_script_enabled=True,
                    viewport={"width": self.viewport[0], "height": self.viewport[1]})
                tab = _Tab(inst, host, context, await context.new_page())
                await tab.page.route("**/*", self._router(tab))
        except Error as exc:
            if tab is not None:
                await tab.close()
            raise BrowserCrashed(_one_line(exc)) from None
        tab.begin(job)
        return tab

    async def _done(self, tab: _Tab, keep: bool) -> None:
        """Keep a tab that rendered its page for the next (at most ``TAB_PAGES`` pages, on
        the current browser); close any other."""
        tab.job = None
        if keep and tab.uses < TAB_PAGES and tab.inst is self.current:
            self._idle.append(tab)
        else:
            await tab.close()

    def _router(self, tab: _Tab) -> Any:
        """A tab's request handler: the main document from its job, other navigations of
        the main frame reported and not followed, the rest through the address guard."""

        async def route(r: Any) -> None:
            request, job = r.request, tab.job
            if job is None:  # between jobs: nothing of an old page goes out
                await r.abort("aborted")
                return
            if request.is_navigation_request() and request.frame.parent_frame is None:
                if not tab.main_done:
                    tab.main_done = True
                    headers = {k: v for k, v in job.headers if k.lower() not in _HOP_HEADERS}
                    await r.fulfill(status=job.status, headers=headers, body=job.body)
                else:
                    # 204: a browser stays on its document (an abort would leave it between
                    # pages, and its load state never comes)
                    tab.navigations.append(request.url)
                    tab.navigated.set()
                    await r.fulfill(status=204, body=b"")
                return
            block = BLOCKED_TYPES if not job.spec.screenshot else frozenset()
            if request.resource_type in block or not await self._allowed(request.url):
                await r.abort("blockedbyclient")
                return
            await r.continue_()

        return route

    async def _allowed(self, url: str) -> bool:
        """A subresource's host passes the address guard (names resolved once a browser)."""
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        host = parts.hostname
        if host not in self._hosts:
            if len(self._hosts) >= HOSTS_CACHED:
                self._hosts.clear()
            self._hosts[host] = await self._refusal(host)
        return self._hosts[host] is None

    async def _refusal(self, host: str) -> str | None:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host.strip("[]"))
            return self.guard.check_host_literal(host)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                                 type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"{host} does not resolve: {exc}"
        refusals = [self.guard.refusal(str(info[4][0])) for info in infos]
        return next((r for r in refusals if r is not None), None) if refusals else "no address"


async def _settle(page: Any, wait: str, deadline: float, navigated: asyncio.Event) -> None:
    """Wait until the page reached ``wait``.  Once its scripts started a navigation (answered
    204, not followed), Playwright's load states never come: the document's own
    ``readyState`` tells then."""
    if wait == "commit":
        return
    loaded = asyncio.ensure_future(page.wait_for_load_state(wait, timeout=_ms_left(deadline)))
    moved = asyncio.ensure_future(navigated.wait())
    await asyncio.wait({loaded, moved}, return_when=asyncio.FIRST_COMPLETED)
    if loaded.done():
        moved.cancel()
        loaded.result()
        return
    loaded.cancel()
    loaded.add_done_callback(_retrieve)
    ready = "'interactive', 'complete'" if wait == "domcontentloaded" else "'complete'"
    await page.wait_for_function(f"[{ready}].includes(document.readyState)",
                                 timeout=_ms_left(deadline))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Read a cancelled wait's outcome (so it is not logged as never retrieved)."""
    if not future.cancelled():
        future.exception()


_HOP_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding",
                          "connection", "keep-alive"})
_CRASH_WORDS = ("crash", "target closed", "browser has been closed", "context or browser has "
                "been closed", "connection closed", "browser closed")


async def _alive(inst: _Instance, tab: _Tab) -> bool:
    """The tab's page and browser still answer (a failure whose cause is their death is the
    browser's, not the page's: its "disconnected" and "crash" events may come after it)."""
    if tab.crashed.is_set() or inst.dead:
        return False
    try:
        await asyncio.wait_for(tab.page.evaluate("1"), PROBE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 (whatever stops the probe: the page is not answering)
        return False
    return not (tab.crashed.is_set() or inst.dead)


def _is_crash(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _CRASH_WORDS)


def _ms_left(deadline: float) -> float:
    return max(1.0, (deadline - time.monotonic()) * 1000)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
