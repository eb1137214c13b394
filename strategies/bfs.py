"""Breadth-first: shallower URLs first, then in the order they were found; a spider follow's
``priority`` goes first."""

from __future__ import annotations

from raycrawl.models import Request
from raycrawl.strategy import CrawlingStrategy


class Strategy(CrawlingStrategy):
    def links_extracted(self, request: Request, links: list[Request]) -> None:
        for link in links:
            self.schedule(link, link.priority if link.priority is not None
                          else 1.0 / (1 + link.depth))
