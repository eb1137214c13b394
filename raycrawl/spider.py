"""The spider API: the user's callbacks that extract items and choose the links to follow.

A spider is a class with callbacks; each fetch worker makes one instance and calls, for every
page it fetched with a 2xx status, the callback its request names (``parse`` for the seeds)
with a :class:`SpiderResponse`.  A callback yields (or returns an iterable of) items — dicts —
and follows — :meth:`SpiderResponse.follow`::

    class Quotes(raycrawl.Spider):
        def parse(self, response):
            yield {"title": response.css("title::text").get()}
            for href in response.css("a.next::attr(href)").getall():
                yield response.follow(href, callback=self.parse_page, meta={"from": "index"})

        def parse_page(self, response): ...

With a spider only the followed links are crawled (every link too, with callback ``parse``,
when the class sets ``follow_links = True``); robots.txt, politeness, dedup, depth, traps and
scope apply to them.  A follow's callback and meta travel with the request through the
frontier, to whichever worker fetches its URL.

A spider is named as ``FILE.py:Class`` or ``package.module:Class`` (importable on the
workers); :func:`load_spider` resolves either.  A file is read on the driver and its source
travels with the config to every worker, so it runs on a cluster where only raycrawl is
installed and under ``ray job submit`` (Ray takes a local file as ``py_modules`` only in the
job's own runtime_env, which a notebook or a job's driver cannot set once Ray is up).
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode, urljoin

import msgpack
from multidict import CIMultiDictProxy
from parsel import Selector, SelectorList
from w3lib.encoding import html_to_unicode

from raycrawl.errors import SpiderError
from raycrawl.render.spec import RenderSpecError, pack_render

DEFAULT_CALLBACK = "parse"
_BASE_TAG = re.compile(rb"<base[\s>/]", re.IGNORECASE)


class Spider:
    """Base class of spiders: subclass it and write callbacks (``parse`` is the seeds').

    Class attributes: ``follow_links`` (also follow every link of every HTML page, with
    ``parse``), ``start_urls`` (seeds used when the crawl is given none), ``handle_status``
    (statuses besides 2xx whose pages reach the callbacks, e.g. ``{404}``), ``render``
    (True, or a dict of render options: every page of the crawl is rendered by a browser; see
    ``raycrawl.render``).

    One instance per fetch worker, made with no arguments; its callbacks run one at a time.
    """

    follow_links: bool = False
    start_urls: tuple[str, ...] | list[str] = ()
    handle_status: frozenset[int] | set[int] = frozenset()
    render: bool | Mapping[str, Any] = False


@dataclass(frozen=True, slots=True)
class Follow:
    """A request a callback asks for: absolute URL, callback name, user meta, priority, and
    how to send it (method, extra headers, body)."""

    url: str
    callback: str | None = None
    meta: Mapping[str, Any] | None = None
    priority: float | None = None
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    age_s: float | None = None  # revisit the page this often (None: the crawl's rule)
    render: bytes | None = None  # packed render choice (None: the crawl's rule)


def callback_name(callback: str | Callable[..., Any] | None) -> str | None:
    """The name a callback travels by: a string as is, a bound method's name."""
    if callback is None or isinstance(callback, str):
        return callback
    name = getattr(callback, "__name__", None)
    if getattr(callback, "__self__", None) is None or not isinstance(name, str):
        raise TypeError(f"callback must be a method of the spider or its name, not {callback!r}")
    return name


class SpiderResponse:
    """A fetched page as a callback sees it (Scrapy's response, parsel's selectors).
    ``visit`` counts the URL's fetches (1: the first; a revisiting crawl calls the callback
    again only when the page changed)."""

    def __init__(self, url: str, status: int, headers: CIMultiDictProxy[str] | Mapping[str, str],
                 body: bytes, meta: dict[str, Any], depth: int,
                 content_type: str | None = None, visit: int = 1) -> None:
        self.url, self.status, self.headers, self.body = url, status, headers, body
        self.meta, self.depth, self.visit = meta, depth, visit
        self.content_type = content_type if content_type is not None else headers.get(
            "Content-Type")

    def __repr__(self) -> str:
        return f"<SpiderResponse {self.status} {self.url}>"

    @cached_property
    def text(self) -> str:
        """The body decoded (header charset, BOM, ``<meta>``; bad bytes become U+FFFD)."""
        return html_to_unicode(self.content_type, self.body)[1]

    @cached_property
    def selector(self) -> Selector:
        kind = "xml" if self.content_type and "xml" in self.content_type.split(";")[0] and \
            "html" not in self.content_type else "html"
        return Selector(text=self.text, type=kind)

    def css(self, query: str) -> SelectorList[Selector]:
        return self.selector.css(query)

    def xpath(self, query: str, **kwargs: Any) -> SelectorList[Selector]:
        return self.selector.xpath(query, **kwargs)

    @cached_property
    def base_url(self) -> str:
        """What relative links resolve against: ``<base href>`` if the page has one (the page
        is parsed for it only when it has a ``<base`` tag)."""
        base = self.selector.xpath("//base/@href").get() if _BASE_TAG.search(self.body) else None
        if base:
            try:
                return urljoin(self.url, base.strip())
            except ValueError:  # an unusable <base href>: ignored
                pass
        return self.url

    def urljoin(self, url: str) -> str:
        return urljoin(self.base_url, url.strip())

    def follow(self, url: str | Selector, callback: str | Callable[..., Any] | None = None,
               meta: Mapping[str, Any] | None = None, priority: float | None = None, *,
               method: str = "GET", headers: Mapping[str, str] | None = None,
               body: bytes | str | None = None,
               formdata: Mapping[str, str] | None = None,
               age: float | None = None,
               render: bool | Mapping[str, Any] | None = None) -> Follow:
        """A request for ``url`` (relative to this page, or an ``<a>`` selector) whose page
        ``callback`` parses (default ``parse``); ``meta`` becomes that page's
        ``response.meta``; a ``priority`` replaces the strategy's score (higher first).

        ``method``, ``headers`` and ``body`` say how to send it; ``formdata`` is a form's
        fields, sent url-encoded as the body (of a POST, unless ``method`` says otherwise).
        The request's fingerprint covers method and body: a POST to a URL and a GET of it are
        two requests, each crawled once.

        ``age`` (seconds) revisits the page that often, whatever the crawl's
        ``--recrawl-after`` (pyspider's ``age`` with auto-recrawl); the first follow of a URL
        sets it.

        ``render`` sends the URL to a browser (True, or a dict of options: ``wait``,
        ``wait_for``, ``script``, ``timeout_s``, ``screenshot``; see ``raycrawl.render``);
        False fetches it plainly whatever the crawl's ``--render`` rule; None follows that
        rule."""
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float))
                                or not age > 0):
            raise TypeError(f"follow: age must be a number of seconds > 0, not {age!r}")
        if isinstance(url, Selector):
            root = url.root
            url = root if isinstance(root, str) else url.attrib.get("href", "")
        if not isinstance(url, str):
            raise TypeError(f"follow: url must be a string or a selector, not {url!r}")
        if meta is not None:
            if not isinstance(meta, Mapping):
                raise TypeError(f"follow: meta must be a dict, not {type(meta).__name__}")
            try:
                msgpack.packb(dict(meta))
            except (TypeError, ValueError, OverflowError) as exc:
                raise TypeError(f"follow: meta must hold plain values: {exc}") from None
        extra = dict(headers or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise TypeError("follow: headers must map strings to strings")
        if formdata is not None:
            body = urlencode(list(formdata.items()))
            extra.setdefault("Content-Type", "application/x-www-form-urlencoded")
            method = "POST" if method == "GET" else method
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            packed = pack_render(render)
        except RenderSpecError as exc:
            raise TypeError(f"follow: {exc}") from None
        return Follow(self.urljoin(url), callback_name(callback),
                      dict(meta) if meta else None,
                      None if priority is None else float(priority), method.upper(),
                      extra or None, body or None, None if age is None else float(age),
                      packed)


def spider_file(spec: str) -> str | None:
    """The file of a ``FILE.py:Class`` spec (absolute), None for ``package.module:Class``."""
    path = spec.rpartition(":")[0]
    return os.path.abspath(path) if path.endswith(".py") else None


def module_name(spec: str) -> str:
    """The module a spec imports on the workers (a file's stem, shipped as a py_module)."""
    path = spec.rpartition(":")[0]
    return os.path.splitext(os.path.basename(path))[0] if path.endswith(".py") else path


def load_spider(spec: str, code: str | None = None, source: str | None = None) -> type[Spider]:
    """The spider class of ``FILE.py:Class`` or ``package.module:Class`` (or of ``code``, a
    class pickled by :func:`spider_spec`).

    A file's ``source`` (read on the driver, shipped with the config; read from the file when
    not given) is run as the module named by the file's stem.  Raises :class:`SpiderError`
    with one line when it does not import or names no Spider subclass."""
    if code is not None:
        try:
            cls = pickle.loads(base64.b64decode(code))
        except Exception as exc:  # a class pickled by another version of its code
            raise SpiderError(f"spider {spec!r} cannot be unpickled: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Spider)):
            raise SpiderError(f"spider {spec!r} is not a raycrawl.Spider subclass")
        return cls
    path, sep, attr = spec.rpartition(":")
    if not sep or not path or not attr:
        raise SpiderError(f"spider {spec!r}: expected FILE.py:Class or package.module:Class")
    name = module_name(spec)
    file = spider_file(spec)
    if file is not None and source is None:
        source = read_source(spec)
    try:
        if file is not None and source is not None:
            module = _run_source(name, file, source)
        else:
            module = importlib.import_module(name)
    except Exception as exc:  # anything the user's module raises while importing
        where = file if file is not None else name
        raise SpiderError(f"spider {spec!r}: {where} does not import: "
                          f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Spider)):
        raise SpiderError(f"spider {spec!r}: {attr} in {name} is not a raycrawl.Spider subclass")
    return cls


def _run_source(name: str, path: str, source: str) -> Any:
    """The module of a spider file's source (once per process and source; a module the
    process imported from that file itself, as a driver may have, is used as it is)."""
    existing = sys.modules.get(name)
    if existing is not None and (
            getattr(existing, "__raycrawl_source__", None) == source
            or (not hasattr(existing, "__raycrawl_source__")
                and os.path.abspath(getattr(existing, "__file__", None) or "") == path)):
        return existing
    module = types.ModuleType(name)
    module.__file__ = path
    module.__raycrawl_source__ = source  # type: ignore[attr-defined]
    sys.modules[name] = module  # its classes pickle by reference, like an imported module's
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def read_source(spec: str) -> str | None:
    """The text of a ``FILE.py:Class`` spider's file (None for a module spec); raises
    :class:`SpiderError` when it cannot be read."""
    file = spider_file(spec)
    if file is None:
        return None
    try:
        with open(file, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        if isinstance(exc, FileNotFoundError):
            reason = "does not exist"
        raise SpiderError(f"spider {spec!r}: {file} {reason}") from None


def spider_spec(spider: str | type[Spider]) -> tuple[str, str | None]:
    """(spec, code) of a spider given as a spec or a class.  A class from an importable module
    becomes ``module:Class`` (``FILE.py:Class`` for a single file outside site-packages, so it
    is shipped); one defined in ``__main__`` (a notebook, a script) travels by value: ``code``
    is the class pickled (cloudpickle, base64), and :func:`load_spider` takes it back."""
    if isinstance(spider, str):
        return spider, None
    if not (isinstance(spider, type) and issubclass(spider, Spider)):
        raise SpiderError(f"spider must be a raycrawl.Spider subclass or a spec, not {spider!r}")
    module = sys.modules.get(spider.__module__)
    if spider.__module__ == "__main__" or module is None:
        from ray import cloudpickle  # pickles a class of __main__ by value

        code = base64.b64encode(cloudpickle.dumps(spider)).decode()
        return f"__main__:{spider.__qualname__}", code
    file = getattr(module, "__file__", None)
    if file and "." not in spider.__module__ and not _installed(file):
        return f"{file}:{spider.__qualname__}", None
    return f"{spider.__module__}:{spider.__qualname__}", None


def _installed(path: str) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.split(os.sep))
