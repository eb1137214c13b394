"""What a strategy worker does with a batch, without Ray: states in, strategy, scoring log out.

Each call reads the batch's URL states in one ``multi_get``, runs the strategy and returns the
scoring log; the caller queues it in the DB workers and then calls :meth:`commit`, which writes
the state changes in one ``WriteBatch`` (or :meth:`discard` if queueing failed).  So a page is
CRAWLED and a link QUEUED in the state only once the links are durably queued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pyarrow as pa

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.reports import StrategyWorkerReport
from raycrawl.formats.entry import pack_meta, unpack_meta
from raycrawl.formats.schemas import FetchOutcome, FetchRequest, LinkFound, ScoreUpdate
from raycrawl.models import Request, Response, URLState
from raycrawl.storage.moves import PartitionCopy, export_partition, ingest_partition
from raycrawl.storage.store import Store
from raycrawl.strategy import CrawlingStrategy, load_strategy
from raycrawl.strategy_worker import states, traps
from raycrawl.strategy_worker.states import URLStates
from raycrawl.strategy_worker.traps import TrapGuard

STRATEGY_TABLES = states.TABLE + traps.TABLES  # a strategy worker's partitioned tables


class StrategyRunner:
    """Runs one crawling strategy over the URL states of a set of partitions."""

    def __init__(self, config: CrawlConfig, store: Store) -> None:
        self.config = config
        self.states = URLStates(store)
        self.traps = TrapGuard(store, config.partitions, config.max_segment_repeats,
                               config.max_query_variants, config.max_pages_per_host,
                               config.max_path_variants, config.max_path_segments,
                               config.max_host_hops, config.max_template_chain)
        self._chains: dict[int, int] = {}  # new links' steps along a template chain
        self.strategy = load_strategy(config.strategy).from_config(config, self._on_schedule)
        self._out = ScoreUpdate.columns()  # filled column-wise: a row per link
        self.counters: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # by error kind
        self.fenced = frozenset(store.fences())  # moving away: see fence
        # The strategy filters links itself: it sees every link's state (all are read)
        self._filters = type(self.strategy).filter_extracted_links is not \
            CrawlingStrategy.filter_extracted_links

    def _on_schedule(self, request: Request, score: float, queue: bool,
                     at: float | None = None) -> None:
        """The strategy's ``schedule``: a URL over a trap limit ends as an error instead; a
        fetched URL (with ``at``) keeps its state, its DB worker moves its next visit."""
        known = request.state in (URLState.CRAWLED, URLState.ERROR)
        request.hops = self.traps.hops(request.host, request.hops)
        chain = self._chains.pop(request.fingerprint, 0)
        skip = (self.traps.verdict(request.url, request.host, request.hops, chain)
                if queue and not known else None)
        state = (URLState.ERROR if skip else URLState.QUEUED) if queue and not known else (
            self.states.state(request.fingerprint))
        self.states.set(request.partition, request.fingerprint, state, request.depth, score)
        request.state = state
        if queue:
            self._row(request, score, skip, at)
            if skip:
                self.skipped[skip] += 1
            else:
                self.counters["scheduled"] += 1

    def _row(self, request: Request, score: float, skip: str | None = None,
             at: float | None = None, modified_at: float | None = None) -> None:
        """A scoring-log row that schedules ``request``."""
        out = self._out
        out["url"].append(request.url)
        out["fingerprint"].append(request.fingerprint)
        out["host"].append(request.host)
        out["partition"].append(request.partition)
        out["depth"].append(request.depth)
        out["score"].append(score)
        out["schedule"].append(True)
        out["redirect_chain"].append(request.redirect_chain)
        out["skip"].append(skip)
        out["callback"].append(request.callback)
        out["meta"].append(pack_meta(request.meta))
        out["method"].append(None if request.method == "GET" else request.method)
        out["headers"].append(pack_meta(request.headers))
        out["body"].append(request.body)
        out["interval_s"].append(request.interval_s)
        out["not_before"].append(at)
        out["modified_at"].append(modified_at)
        out["hops"].append(request.hops)
        out["render"].append(request.render)

    # -- partitions moving (see raycrawl.storage.moves) -------------------------------------
    # A strategy's own state is its URLs' records (state, depth, score) and the trap counts,
    # all in the store: they move with their partition.  What a strategy keeps in memory
    # stays with the worker (see CrawlingStrategy).

    def fence(self, partitions: Collection[int]) -> None:
        """Fence ``partitions`` (durably, frozen at once: a strategy worker has nothing in
        flight): their rows are refused until they are dropped."""
        new = [p for p in partitions if p not in self.fenced]
        if new:
            self.states.store.fence(new, frozen=True)
            self.fenced = self.fenced | frozenset(new)

    def export_partition(self, partition: int) -> PartitionCopy:
        if partition not in self.fenced:
            raise ValueError(f"partition {partition} is exported before it was fenced")
        return export_partition(self.states.store, partition)

    def adopt_partition(self, copy: PartitionCopy) -> None:
        ingest_partition(self.states.store, copy)
        self.traps.forget()
        self.states.known.clear()

    def drop_partition(self, partition: int) -> None:
        self.states.store.drop(partition)
        self.fenced = self.fenced - {partition}
        self.traps.forget()
        self.states.known.clear()

    def report(self) -> StrategyWorkerReport:
        c = self.counters
        return StrategyWorkerReport(
            strategy_finished=self.strategy.finished(), pages_crawled=c["pages_crawled"],
            request_errors=c["request_errors"], scheduled=c["scheduled"],
            links_seen=c["links_seen"], duplicate_pages=c["duplicate_pages"],
            skipped=dict(self.skipped))

    def _drain(self) -> pa.RecordBatch:
        result = ScoreUpdate.batch_of(self._out)
        self._out = ScoreUpdate.columns()
        return result

    def commit(self) -> None:
        """Write the state changes of the last call, atomically (call once its scoring log
        is durably queued)."""
        self.states.flush()
        self.traps.flush()

    def discard(self) -> None:
        """Forget the state changes of the last call (its scoring log was not queued)."""
        self.states.discard()
        self.traps.discard()

    def _requests(self, seeds: pa.RecordBatch, interval_s: float | None = None
                  ) -> list[Request]:
        return [Request(url=r.url, fingerprint=r.fingerprint, host=r.host,
                        partition=r.partition, depth=r.depth,
                        state=self.states.state(r.fingerprint), interval_s=interval_s)
                for r in FetchRequest.from_batch(seeds)]

    def add_seeds(self, seeds: pa.RecordBatch) -> pa.RecordBatch:
        """Seeds (spider-feed schema) in, scoring log out (commit or discard after)."""
        self.states.refresh(seeds.column("partition").to_pylist(),
                            seeds.column("fingerprint").to_pylist())
        self.traps.seed_hosts(seeds.column("host").to_pylist())
        # With reseed_every_s, seeds are revisited that often (pyspider's @every).
        self.strategy.add_seeds(self._requests(seeds, self.config.reseed_every_s))
        return self._drain()

    def process_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> pa.RecordBatch:
        """Pages crawled/errors of this worker's partitions and the links that belong to them;
        scoring log out (commit or discard after).

        Idempotent: a page already CRAWLED/ERROR is not reported to the strategy again, and a
        link already known is not shown as new.
        """
        self.states.refresh(pages.column("partition").to_pylist(),
                            pages.column("fingerprint").to_pylist())
        # A known link's record is not read unless the strategy sees it (it filters links)
        self.states.refresh(links.column("partition").to_pylist(),
                            links.column("fingerprint").to_pylist(),
                            known_unread=not self._filters)
        for url, fp, host, partition, depth, status, content_type, error, visit in (
                FetchOutcome.values(pages, "url", "fingerprint", "host", "partition", "depth",
                                    "status", "content_type", "error", "visit")):
            known = self.states.state(fp)
            if known in (URLState.CRAWLED, URLState.ERROR) and visit == 1:
                self.counters["duplicate_pages"] += 1
                continue
            record = self.states.get(fp)
            score = record.score if record is not None else 0.0
            request = Request(url=url, fingerprint=fp, host=host,
                              partition=partition, depth=depth, state=URLState.QUEUED,
                              visit=visit)
            if visit > 1:  # a revisit: the strategy hears of it, the URL's state stays
                request.state = known
                self.counters["revisits"] += 1
                if status is None:
                    self.strategy.request_error(request, error or "unknown")
                else:
                    self.strategy.page_crawled(Response(url=url, status_code=status,
                                                        request=request,
                                                        content_type=content_type))
                continue
            if status is None:
                self.states.set(partition, fp, URLState.ERROR, depth, score)
                request.state = URLState.ERROR
                self.strategy.request_error(request, error or "unknown")
                self.counters["request_errors"] += 1
            else:
                self.states.set(partition, fp, URLState.CRAWLED, depth, score)
                request.state = URLState.CRAWLED
                self.strategy.page_crawled(Response(url=url, status_code=status,
                                                    request=request,
                                                    content_type=content_type))
                self.counters["pages_crawled"] += 1
        self._links_extracted(links)
        self._changed_links(links)
        return self._drain()

    def _changed_links(self, links: pa.RecordBatch) -> None:
        """Known URLs a sitemap says changed (``modified_at``): their DB worker makes them due
        if their last visit was before the change."""
        modified = links.column("modified_at")
        if modified.null_count == len(modified):
            return
        state = self.states.state
        for request, at in zip(self._link_requests(links, [
                i for i, m in enumerate(modified.to_pylist()) if m is not None]),
                modified.drop_null().to_pylist()):
            if state(request.fingerprint) is URLState.CRAWLED:
                record = self.states.get(request.fingerprint)
                self._row(request, record.score if record else 0.0, modified_at=at)

    def _links_extracted(self, links: pa.RecordBatch) -> None:
        """Show the strategy each parent's new links.  Most links of a batch are known URLs:
        only their fingerprints are read, and the other columns are converted for the new
        ones alone (for all of them if the strategy filters links itself)."""
        if links.num_rows == 0:
            return
        fps = links.column("fingerprint").to_pylist()
        by_parent: dict[str, list[int]] = {}
        parent_depth: dict[str, int] = {}
        for i, (parent, pdepth) in enumerate(zip(links.column("parent_url").to_pylist(),
                                                 links.column("parent_depth").to_pylist())):
            by_parent.setdefault(parent, []).append(i)
            parent_depth[parent] = pdepth
        filters = self._filters
        state, is_new = self.states.state, self.states.is_new
        hosts = links.column("host").to_pylist()
        urls = links.column("url").to_pylist()
        # The rows that may be shown, converted at once (one take for the batch, not one a
        # parent: 35% of a strategy worker on small pages, benchmarks/README.md step 22).
        shown = range(len(fps)) if filters else [i for i, fp in enumerate(fps) if is_new(fp)]
        requests = dict(zip(shown, self._link_requests(links, list(shown))))
        for parent, rows in by_parent.items():
            # read as the links are shown: queued for one parent, a link is no longer new for
            # the next.  Chain steps are a new link's: a page that links none is not looked at.
            new = [is_new(fps[i]) for i in rows]
            self._chains = self.traps.chains(parent, [
                (urls[i], hosts[i], fps[i], n) for i, n in zip(rows, new)]) if any(new) else {}
            if not filters:
                rows = [i for i, n in zip(rows, new) if n]
                if not rows:
                    continue
            request = Request(url=parent, depth=parent_depth[parent], state=URLState.CRAWLED)
            found = [requests[i] for i in rows]
            if filters:
                found = self.strategy.filter_extracted_links(request, found)
            fresh = []
            for link in found:
                link.state = state(link.fingerprint)
                if link.state is URLState.NOT_CRAWLED:
                    fresh.append(link)
            if fresh:
                self.strategy.links_extracted(request, fresh)
        self._chains = {}
        self.counters["links_seen"] += links.num_rows

    @staticmethod
    def _link_requests(links: pa.RecordBatch, rows: list[int]) -> list[Request]:
        return [Request(url=k.url, fingerprint=k.fingerprint, host=k.host,
                        partition=k.partition, depth=k.depth,
                        redirect_chain=list(k.redirect_chain), callback=k.callback,
                        meta=unpack_meta(k.meta), priority=k.priority,
                        method=k.method or "GET", headers=unpack_meta(k.headers), body=k.body,
                        interval_s=k.interval_s, hops=k.hops or 0, render=k.render)
                for k in LinkFound.from_batch(links.take(pa.array(rows, type=pa.int64())))]
