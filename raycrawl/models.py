"""Requests, responses and URL states: the objects strategies and codecs work with."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class URLState(enum.IntEnum):
    """The life of a URL in a strategy worker; prints as a word."""

    NOT_CRAWLED = 0
    QUEUED = 1
    CRAWLED = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class Request:
    """A URL to fetch, as strategies and codecs see it (Frontera's ``Request``).

    ``meta`` holds user data only (a spider follow's ``meta``, shown to the callback as
    ``response.meta``); crawl state (depth, fingerprint, URL state) has its own attributes.
    """

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    fingerprint: int = 0
    host: str = ""
    partition: int = 0
    state: URLState = URLState.NOT_CRAWLED
    redirect_chain: list[str] = field(default_factory=list)  # URLs that redirected here
    callback: str | None = None  # the spider callback that parses its page (None: ``parse``)
    priority: float | None = None  # a spider follow's priority (built-in strategies use it)
    body: bytes | None = None  # a spider follow's request body (POST)
    interval_s: float | None = None  # its revisit interval (a spider follow's age)
    visit: int = 1  # which fetch of the URL a page crawled is (revisits count on)
    hops: int = 0  # host changes on its path from a seed's host
    render: bytes | None = None  # a spider follow's render choice (raycrawl.render.spec)


@dataclass(slots=True)
class Response:
    """A fetched page (Frontera's ``Response``); ``request`` is what was asked for."""

    url: str
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)
    request: Request | None = None
    content_type: str | None = None

    @property
    def method(self) -> str:
        return self.request.method if self.request is not None else "GET"
