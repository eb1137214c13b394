"""A crawl's scope: which links it follows (``--allow-domain``, ``--include``, ``--exclude``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from raycrawl.errors import ConfigError


@dataclass(frozen=True)
class Scope:
    """Links in scope: on an allowed domain or its subdomains (when any is given), matching an
    ``include`` pattern (when any is given) and no ``exclude`` pattern; patterns are searched
    in the canonical URL (``re.search``)."""

    allow_domains: tuple[str, ...] = ()
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(cls, allow_domains: tuple[str, ...], include: tuple[str, ...],
              exclude: tuple[str, ...]) -> Scope:
        """Raises :class:`ConfigError` for a pattern that does not compile or an empty domain."""
        domains = []
        for domain in allow_domains:
            d = domain.strip().lower().rstrip(".").removeprefix("*.").removeprefix(".")
            if not d or "/" in d or ":" in d.strip("[]"):
                raise ConfigError(f"allow_domain: not a domain name: {domain!r}")
            domains.append(d)
        return cls(tuple(domains), _compile("include", include), _compile("exclude", exclude))

    @property
    def everything(self) -> bool:
        return not (self.allow_domains or self.include or self.exclude)

    def allows(self, url: str, host: str) -> bool:
        """``host`` is the URL's host (lower case, no port)."""
        if self.allow_domains and not any(host == d or host.endswith("." + d)
                                          for d in self.allow_domains):
            return False
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def _compile(name: str, patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    out = []
    for pattern in patterns:
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{name}: {pattern!r} is not a regular expression: {exc}") from None
    return tuple(out)
