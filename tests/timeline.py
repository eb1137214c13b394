"""The requests a test web saw over time: what a crawl had fetched at a given moment (say,
when its rollback was written, ``checkpoints.read_rollback(out).at``: the crawl fetches on
after a loss until its workers drain)."""

from __future__ import annotations

import threading
import time

from raycrawl.testing.synthweb import SyntheticWeb


class HitTimeline:
    """The web's requests so far, sampled every 20 ms (what had been fetched when the
    rollback was written: the crawl fetches on until its workers are drained, after the loss
    and before Ray notices it)."""

    def __init__(self, web: SyntheticWeb) -> None:
        self.web = web
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.02):
            with self.web.lock:
                total = sum(self.web.hits.values())
            self.samples.append((time.time(), total))

    def stop(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.thread.join()

    def at(self, when: float) -> int:
        """Requests seen by the first sample at or after ``when``."""
        return next((n for t, n in self.samples if t >= when), self.samples[-1][1])

