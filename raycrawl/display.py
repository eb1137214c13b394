"""How a crawl shows itself: one line, an HTML table, a progress bar, a live notebook view.

Everything here renders a :class:`CrawlStatus`; nothing calls Ray.  The progress bar is tqdm's
(``tqdm.auto``: a widget in Jupyter, a text bar in a terminal); the live view is an ipywidgets
``HTML`` widget refreshed by a thread, so the notebook's kernel stays free while it updates.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from raycrawl.coordinator.reports import CrawlStatus, DBWorkerReport


def revisit_counters(s: CrawlStatus) -> dict[str, str]:
    """The revisit counters of a crawl that revisits, as text by name (none for one that
    does not): what the line, the HTML table and ``raycrawl status`` show."""
    if not (s.revisits or s.not_due or s.due):
        return {}
    return {"revisits": f"{s.revisits} ({s.revisits_per_s}/s)", "due": str(s.due),
            "overdue": str(s.overdue), "not due yet": str(s.not_due),
            "freshness": "-" if s.freshness is None else f"{s.freshness:.0%}"}


def reasons_text(s: CrawlStatus) -> str:
    """Why the queued URLs wait, most first: ``ready 10, politeness 4``."""
    return ", ".join(f"{k} {n}" for k, n in sorted(s.queued_by_reason.items(),
                                                   key=lambda kv: -kv[1]))


def rescale_text(s: CrawlStatus) -> str:
    """The rescale under way ("" when none): the workers asked for, partitions left to move,
    the move in progress."""
    if not (s.rescale_to or s.moving):
        return ""
    to = ", ".join(f"{n} {role.replace('_', ' ')}" for role, n in s.rescale_to.items())
    return (f"{to}: {s.moves_left} partitions to move"
            + (f"; moving {s.moving}" if s.moving else ""))


def fetch_workers_text(w: DBWorkerReport) -> str:
    """A DB worker's fetch workers; holding none, whose it runs its batches on."""
    if w.fetch_workers or not w.lenders:
        return str(w.fetch_workers)
    return "0 (a guest of " + ", ".join(f"db-worker-{i}" for i in w.lenders) + ")"


def checkpoint_text(s: CrawlStatus) -> str:
    """The last checkpoint and the rollbacks ("" before any): ``7 at 12:03:10 UTC, 41.2 MB
    (1.3 MB uploaded); rolled back 1 time``."""
    parts = []
    if s.checkpoint:
        at = time.strftime("%H:%M:%S", time.gmtime(s.checkpoint_at))
        parts.append(f"{s.checkpoint} at {at} UTC, {s.checkpoint_bytes / 1e6:.1f} MB "
                     f"({s.checkpoint_uploaded / 1e6:.1f} MB uploaded)")
    if s.rollbacks:
        parts.append(f"rolled back {s.rollbacks} time{'s' if s.rollbacks > 1 else ''}")
    return "; ".join(parts)


def status_line(s: CrawlStatus) -> str:
    """One line: phase, counters, pages/s (and why it waits, if it does)."""
    waiting = f", {s.waiting}" if s.waiting else ""
    if s.queued and not s.in_flight_batches and s.queued_by_reason:  # say what it waits for
        waiting += f" (queued: {reasons_text(s)})"
    revisits = ""
    if r := revisit_counters(s):
        revisits = (f", revisits {r['revisits']}, due {r['due']}, overdue {r['overdue']}, "
                    f"fresh {r['freshness']}")
    return (f"{s.phase}: fetched {s.fetched}, queued {s.queued}, in flight "
            f"{s.in_flight_batches} batches, errors {s.errors}, {s.pages_per_s} pages/s"
            f"{revisits}{waiting}")


def status_html(s: CrawlStatus) -> str:
    """An HTML table of a status: phase, counters, errors by kind, one row per worker."""
    e = html.escape
    counters = [
        ("phase", f"{s.phase}" + (f" ({s.reason})" if s.reason else "")),
        ("fetched", s.fetched), ("queued", s.queued),
        ("in flight", f"{s.in_flight_batches} batches"), ("errors", s.errors),
        ("retries", s.retries), ("pages/s", s.pages_per_s), ("elapsed", f"{s.elapsed_s} s"),
        ("fetch workers", s.fetch_workers),
    ]
    if s.waiting:
        counters.append(("waiting", s.waiting))
    if s.queued_by_reason:
        counters.append(("queued, by why", reasons_text(s)))
    if s.stalls:
        counters.append(("stalls", s.stalls))
    counters += revisit_counters(s).items()
    if s.items_total:
        counters.append(("items", s.items_total))
    if s.warc_records:
        counters.append(("WARC records", s.warc_records))
    if s.out_of_scope:
        counters.append(("links out of scope", s.out_of_scope))
    if rescale := rescale_text(s):
        counters.append(("rescaling", rescale))
    if checkpoint := checkpoint_text(s):
        counters.append(("checkpoint", checkpoint))
    counters.append(("output", s.out))
    rows = "".join(f"<tr><th style='text-align:left'>{e(str(k))}</th>"
                   f"<td style='text-align:left'>{e(str(v))}</td></tr>" for k, v in counters)
    kinds = ", ".join(f"{e(k)} {n}" for k, n in sorted(s.error_kinds.items())) or "none"
    workers = "".join(
        f"<tr><td>db-worker-{i}</td><td>{w.queued}</td><td>{w.leased_urls}</td>"
        f"<td>{w.fetched}</td><td>{w.errors}</td><td>{e(fetch_workers_text(w))}</td>"
        f"<td>{e(w.partitions)}</td></tr>"
        for i, w in enumerate(s.db_workers))
    strategy = "".join(
        f"<tr><td>strategy-worker-{i}</td><td colspan='5'>crawled {w.pages_crawled}, "
        f"scheduled {w.scheduled}, request errors {w.request_errors}</td>"
        f"<td>{e(w.partitions)}</td></tr>"
        for i, w in enumerate(s.strategy_workers))
    return (f"<div class='raycrawl-status'><b>crawl {e(s.crawl_id)}</b>"
            f"<table>{rows}<tr><th style='text-align:left'>errors by kind</th>"
            f"<td style='text-align:left'>{kinds}</td></tr></table>"
            "<table><tr><th>worker</th><th>queued</th><th>in flight (URLs)</th>"
            "<th>fetched</th><th>errors</th><th>fetch workers</th><th>partitions</th></tr>"
            f"{workers}{strategy}</table></div>")


class ProgressBar:
    """A tqdm bar of a crawl: fetched of (fetched + queued + in flight), with the phase,
    pages/s and errors beside it.  ``notebook``: tqdm.auto's choice (a widget in Jupyter);
    else a text bar on ``file``."""

    def __init__(self, crawl_id: str, file: TextIO | None = None, notebook: bool = True) -> None:
        if notebook:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self.bar = tqdm(total=0, desc=crawl_id, unit="page", file=file or sys.stderr,
                        dynamic_ncols=True)

    def __call__(self, s: CrawlStatus) -> None:
        leased = sum(w.leased_urls for w in s.db_workers)
        self.bar.total = max(s.fetched + s.queued + leased, s.fetched, 1)
        self.bar.n = s.fetched
        postfix = f"{s.phase}, {s.pages_per_s} pages/s, errors {s.errors}"
        self.bar.set_postfix_str(postfix + (f", {s.waiting}" if s.waiting else ""),
                                 refresh=False)
        self.bar.refresh()

    def close(self, s: CrawlStatus | None = None) -> None:
        if s is not None:
            self(s)
        self.bar.close()


class LiveView:
    """A notebook widget showing a crawl's status, refreshed every ``interval_s`` by a daemon
    thread until the crawl ends (or :meth:`stop`); the kernel stays free meanwhile."""

    def __init__(self, read: Callable[[], CrawlStatus | None], interval_s: float = 1.0) -> None:
        import ipywidgets

        self.read = read
        self.interval_s = interval_s
        self.widget = ipywidgets.HTML(value="<i>starting...</i>")
        self.updates = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="raycrawl-live-view", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status = self.read()
            if status is not None:
                self.widget.value = status_html(status)
                self.updates += 1
                if status.phase.terminal:
                    return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
