"""The Python API: ``raycrawl.Crawl`` for notebooks and programs."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from raycrawl.config import RETIRED_FIELDS, CrawlConfig, config_from_mapping, render_settings
from raycrawl.coordinator.phases import Phase
from raycrawl.coordinator.reports import CrawlStatus, SeedReply
from raycrawl.display import LiveView, ProgressBar, status_html, status_line
from raycrawl.errors import (
    ConfigError,
    CrawlStateError,
    CrawlUnavailable,
    InvalidURL,
    SeedError,
)
from raycrawl.formats.items import read_items
from raycrawl.output.durable import read_pages
from raycrawl.render.browser import BrowserUnavailable, check_browser
from raycrawl.spider import load_spider, read_source, spider_file, spider_spec
from raycrawl.storage.location import Location, is_local, is_uri, local_path
from raycrawl.storage.ownership import check_new_state, claim_out, take_lease
from raycrawl.storage.statefiles import COORDINATOR, MANIFEST, STATUS, read_json, read_out_json
from raycrawl.strategy import load_strategy
from raycrawl.urls import canonicalize

if TYPE_CHECKING:
    from actors.handles import CoordinatorHandle

SNAPSHOT_TIMEOUT_S = 10.0  # a repr or live view falls back to status.json after this
COORDINATOR_MISSES = 3  # status calls in a row the coordinator may miss before wait() gives up


T = TypeVar("T")

def read_seeds_file(path: str, strategy: str = "bfs") -> list[str]:
    """Seed URLs from a file, parsed by the strategy's ``read_seeds``."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SeedError(f"cannot read seeds file {path}: {reason}") from None
    return load_strategy(strategy).read_seeds(lines)


class Crawl:
    """One crawl: ``Crawl(seeds=[...], out="out/")`` or ``Crawl(config)``.

    ``start()`` returns at once; the crawl runs in Ray actors and survives this object (and
    this process) until it finishes or is stopped.
    """

    def __init__(self, config: CrawlConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("pass either a CrawlConfig or keyword settings, not both")
        if settings.get("spider") is not None:  # a Spider class, or its spec
            settings["spider"], code = spider_spec(settings["spider"])
            if code is not None:
                settings["spider_code"] = code
        self.config = config if config is not None else config_from_mapping(settings)
        self._handle: CoordinatorHandle | None = None
        self.seed_report = SeedReply()

    @property
    def crawl_id(self) -> str:
        return self.config.crawl_id

    def _coordinator(self) -> CoordinatorHandle:
        if self._handle is None:
            raise CrawlStateError("the crawl is not started; call start() first")
        return self._handle

    def start(self, **ray_init: Any) -> Crawl:
        """Connect to (or start) Ray, create the crawl's actors and queue the seeds.

        Returns once the seeds are queued.  Raises :class:`SeedError` if no seed is valid.
        """
        from actors.handles import CoordinatorHandle, connect
        from actors.peers import cluster_address

        seeds = self.check()
        # Workers may run in another folder (or on another node).
        out = local_path(self.config.out) if is_local(self.config.out) else self.config.out
        self.config = self.config.replace(out=out, state=os.path.abspath(self.config.state_dir))
        check_new_state(self.config.state_dir, self.crawl_id)
        claim_out(self.config.out, self.crawl_id, self.config.state_dir)
        connect(self.config.address, **ray_init)
        take_lease(self.config.state_dir, self.crawl_id, 1, cluster_address())
        self._handle, self.seed_report = CoordinatorHandle.launch(self.config, seeds)
        return self

    def check(self) -> list[str]:
        """Check what can be checked before Ray starts; returns the seed URLs.

        The strategy and the spider must load, and every seed (from the config and its seeds
        file, else the spider's ``start_urls``) must be a valid URL: an invalid seed is an
        error, not something to skip silently."""
        load_strategy(self.config.strategy)
        seeds = list(self.config.seeds)
        if self.config.seeds_file:
            seeds += read_seeds_file(self.config.seeds_file, self.config.strategy)
        spec = self.config.spider
        if spec is not None:
            file = spider_file(spec)
            if file is not None:  # read here and shipped with the config (and the manifest)
                spec = f"{file}:{spec.rpartition(':')[2]}"
                self.config = self.config.replace(spider=spec, spider_source=read_source(spec))
            spider = load_spider(spec, self.config.spider_code, self.config.spider_source)
            if not seeds:
                seeds = [str(url) for url in spider.start_urls]
            if spider.render:  # the crawl's rule from now on (its workers' bounds know it)
                self.config = self.config.replace(**render_settings(spider.render))
        if self.config.render_rule.may_render and self.config.address is None \
                and not os.environ.get("RAY_ADDRESS"):
            try:  # a crawl on this machine: no browser here is a bad setup, said now
                check_browser(self.config.browser_path)
            except BrowserUnavailable as exc:
                raise ConfigError(f"render: {exc}") from None
        if not seeds:
            raise SeedError("no seed URLs given")
        for url in seeds:
            try:
                canonicalize(url)
            except InvalidURL as exc:
                raise SeedError(f"invalid seed URL: {exc}") from None
        return seeds

    def stats(self) -> CrawlStatus:
        """fetched, queued, in flight, errors (by kind), pages/s, per-worker reports; read as
        attributes or as a mapping (``stats["fetched"]``)."""
        return self._coordinator().status()

    def add_seeds(self, urls: list[str]) -> SeedReply:
        """Queue more seeds; returns how many were accepted and the invalid ones with why."""
        return self._coordinator().add_seeds(list(urls))

    def pause(self) -> Phase:
        return self._coordinator().pause()

    def resume(self) -> Phase:
        return self._coordinator().resume()

    def scale(self, db_workers: int | None = None, strategy_workers: int | None = None,
              wait: bool = True, timeout: float | None = None,
              interval_s: float = 0.2) -> CrawlStatus:
        """Rescale the running crawl to ``db_workers`` DB workers and ``strategy_workers``
        strategy workers (None: as many as now).  Partitions move between workers while it
        crawls, a few at a time, balanced by the URLs they hold; with ``wait`` this returns
        once every move is done (and the workers left without partitions are retired), else
        once the new workers are up.  A coordinator restarted meanwhile carries the rescale
        on.  On ``timeout`` the rescale goes on and :class:`TimeoutError` is raised."""
        coordinator = self._coordinator()
        coordinator.scale(db_workers, strategy_workers)
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait:
            left = self._ask(coordinator.rescaling)
            if left == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"crawl {self.crawl_id}: {left} partitions still to move")
            time.sleep(interval_s)
        return self.stats()

    def _ask(self, read: Callable[[], T]) -> T:
        """``read()`` from the coordinator; one that does not answer (hung or restarting) is
        replaced once — Ray restarts it and it adopts the crawl —, then given up on
        (:class:`CrawlUnavailable`)."""
        misses = 0
        while True:
            try:
                return read()
            except CrawlUnavailable:
                misses += 1
                if misses > COORDINATOR_MISSES:
                    raise
                if misses == 1:
                    self._coordinator().replace()

    def stop(self) -> CrawlStatus:
        """Drain batches in flight, write all output, end the actors."""
        self._coordinator().stop()
        return self.shutdown()

    def wait(self, timeout: float | None = None,
             progress: bool | Callable[[CrawlStatus], None] = False,
             interval_s: float = 1.0) -> CrawlStatus:
        """Block until the crawl ends, then end its actors; returns the final stats.

        ``progress=True`` shows a live progress bar (a widget in Jupyter, a text bar on
        stderr in a terminal); a callable is called with the stats every ``interval_s``.  On
        ``timeout`` the crawl keeps running and :class:`TimeoutError` is raised.  A
        coordinator that does not answer is replaced (Ray restarts it and it adopts the
        crawl); if it still does not, :class:`CrawlUnavailable` is raised.
        """
        if progress is True:
            bar, final = ProgressBar(self.crawl_id), None
            try:
                final = self.wait(timeout, bar, interval_s)
                return final
            finally:
                bar.close(final)
        report = progress if callable(progress) else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            stats = self._ask(self.stats)
            if stats.phase.terminal:
                break
            if report is not None:
                report(stats)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"crawl {self.crawl_id} still {stats.phase}")
            time.sleep(interval_s)
        return self.shutdown()

    def shutdown(self) -> CrawlStatus:
        """End the crawl's actors (stopping it first if needed); the state stays on disk."""
        coordinator = self._coordinator()
        coordinator.shutdown()
        stats = coordinator.status()
        coordinator.kill()
        self._handle = None
        return stats

    def progress(self, interval_s: float = 1.0) -> LiveView:
        """A live view for notebooks: an HTML status that a background thread refreshes every
        ``interval_s`` until the crawl ends, while the kernel stays free.  Display it (the
        last expression of a cell); ``.stop()`` ends the updates."""
        return LiveView(self._snapshot, interval_s)

    def _snapshot(self) -> CrawlStatus | None:
        """The crawl's status: from its coordinator while it runs, else the last one written
        to ``status.json``; None before it started."""
        if self._handle is not None:
            try:  # bounded tighter than a control call: a display must not hang
                return self._handle.status(timeout=SNAPSHOT_TIMEOUT_S)
            except (CrawlUnavailable, CrawlStateError):
                pass
        try:
            return read_status(self.config.state_dir)
        except CrawlStateError:
            return None

    def __repr__(self) -> str:
        s = self._snapshot()
        what = "not started" if s is None else status_line(s)
        return f"<raycrawl.Crawl {self.crawl_id} {what}; out {self.config.out}>"

    def _repr_html_(self) -> str:
        s = self._snapshot()
        if s is None:
            return (f"<div><b>crawl {html.escape(self.crawl_id)}</b>: not started "
                    f"(out {html.escape(self.config.out)})</div>")
        return status_html(s)

    def dataset(self, kind: str = "pages") -> Any:
        """``OUT/pages`` or ``OUT/items`` as a ``ray.data.Dataset`` (read lazily, in parallel,
        on the cluster).  Item files agree on one schema once the crawl has ended."""
        folders = {"pages": self.config.pages_dir, "items": self.config.items_dir}
        if kind not in folders:
            raise ValueError(f"dataset: kind must be 'pages' or 'items', not {kind!r}")
        folder = Location.of(folders[kind])
        if not any(n.endswith(".parquet") for n in folder.names()):
            raise CrawlStateError(f"no {kind} written yet in {folder}")
        import ray.data

        return ray.data.read_parquet(folder.root, filesystem=folder.fs,
                                     file_extensions=["parquet"])

    def pages(self) -> pa.Table:
        """The ``OUT/pages`` rows written so far, as a pyarrow Table."""
        return read_pages(self.config.pages_dir)

    def items(self) -> pa.Table:
        """The spider's items written so far (``OUT/items``), as one pyarrow Table: ``url``
        (the page), then a column per field (see ``raycrawl.formats.items``)."""
        return read_items(self.config.items_dir)

    @classmethod
    def attach(cls, state_dir: str, address: str | None = None) -> Crawl:
        """A handle to the crawl whose state is in ``state_dir``, or whose output is there
        (a folder or a URI such as ``s3://bucket/crawl``: its state folder is read from the
        manifest the coordinator copies to ``OUT/_crawl``).

        If the crawl is running (its coordinator answers), this joins it.  If it was stopped,
        or its driver was killed, or its Ray cluster went away, this resumes it from the state
        alone, as a new generation: same config and partitions, queues and URL states as they
        were durably left, leases of the dead generation put back in the queue.  A finished
        crawl cannot be attached to (:class:`CrawlStateError`), unless it revisits: a
        revisiting crawl that ended (at ``run_for_s``) goes on watching, with its due times,
        for another ``run_for_s``.
        """
        from actors.handles import CoordinatorHandle, connect
        from actors.peers import cluster_address

        if is_uri(state_dir) or not os.path.exists(os.path.join(state_dir, MANIFEST)):
            try:  # an OUT: its copy of the manifest names the state folder
                state_dir = read_out_json(state_dir, MANIFEST)["config"]["state"]
            except CrawlStateError:
                if is_uri(state_dir):
                    raise
                # not an output either: say that the state folder has no crawl
        manifest = read_manifest(state_dir)
        config = config_from_mapping({k: v for k, v in manifest["config"].items()
                                      if k not in RETIRED_FIELDS})
        if address is not None:
            config = config.replace(address=address)
        crawl = cls(config)
        connect(config.address)
        handle = CoordinatorHandle.lookup(crawl.crawl_id)
        if handle is not None and handle.alive():
            crawl._handle = handle
            return crawl
        last = read_json(state_dir, COORDINATOR)
        if last.get("phase") == Phase.FINISHED and not config.revisits:
            raise CrawlStateError(f"crawl {crawl.crawl_id} has finished; its pages are in "
                                  f"{config.pages_dir}")
        generation = int(manifest.get("generation", 1)) + 1
        here = cluster_address()  # the coordinator is not running here: its lease is free
        take_lease(config.state_dir, crawl.crawl_id, generation, here, holder_gone_on=here)
        crawl._handle, crawl.seed_report = CoordinatorHandle.launch(config, [], generation)
        return crawl


def read_manifest(state_dir: str) -> dict[str, Any]:
    return read_json(state_dir, MANIFEST)


def read_status(state_dir: str) -> CrawlStatus:
    """The last status the coordinator wrote to ``state_dir/status.json``."""
    return CrawlStatus.from_dict(read_json(state_dir, STATUS))


def read_out_status(out: str) -> CrawlStatus:
    """The last status the coordinator wrote to the crawl's output ``out`` (a folder or a
    URI), from any machine."""
    return CrawlStatus.from_dict(read_out_json(out, STATUS))
