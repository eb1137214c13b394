"""Which URLs a browser renders, and how: a render spec per request (no Playwright here).

A URL is rendered when its follow asked for it (``response.follow(url, render=True)`` or a
dict of options), else when the crawl's rule says so: ``--render`` (every page), a
``--render-include`` pattern that its canonical URL matches, or the spider's ``render``
class attribute.  A follow's ``render=False`` fetches its URL plainly whatever the rule.

A follow's choice travels with its URL through the frontier as ``render`` (msgpack): None
(the crawl's rule), ``False`` (never) or a map of the options it set (``{}``: the crawl's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import msgpack

# What bounds a render's time (the fetch's bound, ``raycrawl.fetch.bounds``, counts them):
LAUNCH_TIMEOUT_S = 30.0  # a browser's start
CRASH_TRIES = 3  # renders of one page on browsers that died under it, before it is given up
WAITS = ("load", "domcontentloaded", "networkidle", "commit")
NEVER = msgpack.packb(False)


class RenderSpecError(ValueError):
    """A render option that is not one (a one-line reason)."""


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """How one page is rendered: navigate, wait for ``wait`` (Playwright's load states) and
    then for the CSS selector ``wait_for``, run ``script`` (a JavaScript expression or
    function, pyspider's ``js_script``), all within ``timeout_s``; then read the DOM and, with
    ``screenshot``, a PNG of the viewport."""

    wait: str = "load"
    wait_for: str | None = None
    script: str | None = None
    timeout_s: float = 30.0
    screenshot: bool = False

    def __post_init__(self) -> None:
        if self.wait not in WAITS:
            raise RenderSpecError(f"render wait must be one of {', '.join(WAITS)}, "
                                  f"not {self.wait!r}")
        for name in ("wait_for", "script"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise RenderSpecError(f"render {name} must be a non-empty string, not {value!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not self.timeout_s > 0:
            raise RenderSpecError(f"render timeout_s must be a number of seconds > 0, not "
                                  f"{self.timeout_s!r}")
        if not isinstance(self.screenshot, bool):
            raise RenderSpecError(f"render screenshot must be True or False, not "
                                  f"{self.screenshot!r}")

    def overlay(self, options: Mapping[str, Any]) -> RenderSpec:
        """This spec with ``options`` (a subset of its fields) replaced."""
        unknown = set(options) - OPTION_NAMES
        if unknown:
            raise RenderSpecError(f"render options: unknown {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(sorted(OPTION_NAMES))})")
        return replace(self, **options)


OPTION_NAMES = frozenset(f.name for f in fields(RenderSpec))


def pack_render(value: bool | Mapping[str, Any] | None) -> bytes | None:
    """A follow's ``render`` as its URL carries it (checked: a bad option raises
    :class:`RenderSpecError` in the callback that asked for it)."""
    if value is None:
        return None
    if value is True:
        return msgpack.packb({})
    if value is False:
        return NEVER
    if isinstance(value, Mapping):
        RenderSpec().overlay(value)  # raises on a bad option
        return msgpack.packb(dict(value))
    raise RenderSpecError(f"render must be True, False or a dict of options, not {value!r}")


@dataclass(frozen=True, slots=True)
class RenderRule:
    """The crawl's rule (see the module docstring) and its default spec."""

    every: bool = False
    include: tuple[str, ...] = ()
    spec: RenderSpec = RenderSpec()
    patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = tuple(re.compile(p) for p in self.include)
        except re.error as exc:
            raise RenderSpecError(f"render include pattern: {exc}") from None
        object.__setattr__(self, "patterns", compiled)

    @property
    def may_render(self) -> bool:
        """Some URL renders by this rule alone."""
        return self.every or bool(self.include)

    def with_spider(self, render: bool | Mapping[str, Any] | None) -> RenderRule:
        """The rule once the spider's ``render`` attribute is known (True, or a dict of
        options that renders every page with them)."""
        if not render:
            return self
        spec = self.spec.overlay(render) if isinstance(render, Mapping) else self.spec
        return replace(self, every=True, spec=spec)

    def spec_for(self, url: str, packed: bytes | None) -> RenderSpec | None:
        """How to render ``url`` whose request carries ``packed`` (None: fetch it plainly)."""
        if packed is not None:
            value = msgpack.unpackb(packed)
            if value is False:
                return None
            return self.spec.overlay(value) if value else self.spec
        if self.every or any(p.search(url) for p in self.patterns):
            return self.spec
        return None
