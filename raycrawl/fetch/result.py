"""What a fetch worker hands back for a spider-feed batch's hosts (:class:`FetchResult`), apart
from the fetch path that fills it (``raycrawl.fetch.collect``): a DB worker reads it without
loading that path.
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from raycrawl.formats.schemas import FetchOutcome, HostCookies, ItemFound, LinkFound, RobotsFetch


class FetchResult(NamedTuple):
    """What a spider-feed batch gave: the spider log (pages, links), the robots.txt fetches,
    the items the spider's callbacks yielded and the cookies its hosts hold now (a crawl that
    keeps them)."""

    pages: pa.RecordBatch
    links: pa.RecordBatch
    robots: pa.RecordBatch
    items: pa.RecordBatch
    cookies: pa.RecordBatch

    @classmethod
    def empty(cls) -> FetchResult:
        return cls(FetchOutcome.empty(), LinkFound.empty(), RobotsFetch.empty(),
                   ItemFound.empty(), HostCookies.empty())

    @classmethod
    def concat(cls, parts: list[FetchResult]) -> FetchResult:
        if not parts:
            return cls.empty()
        return cls(*(pa.concat_batches([p[i] for p in parts]) for i in range(len(cls._fields))))
