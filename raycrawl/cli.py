"""The ``raycrawl`` command: crawl, resume, scale, status, list, parse, demo, synthweb."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any, NoReturn

from raycrawl.config import CODECS, LINK_PARSERS
from raycrawl.coordinator.phases import Phase
from raycrawl.coordinator.reports import CrawlStatus
from raycrawl.display import (
    ProgressBar,
    checkpoint_text,
    fetch_workers_text,
    reasons_text,
    rescale_text,
    revisit_counters,
    status_line,
)
from raycrawl.errors import CrawlUnavailable, RaycrawlError
from raycrawl.render.spec import WAITS


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fetch_flags(p: argparse.ArgumentParser) -> None:
    """The flags of how a URL is fetched and its links kept (``crawl`` and ``parse``)."""
    p.add_argument("--no-robots", action="store_const", const=False, dest="robots")
    p.add_argument("--allow-network", action="append", metavar="CIDR")
    p.add_argument("--user-agent", metavar="UA", help="User-Agent header and robots.txt name")
    p.add_argument("--link-parser", choices=LINK_PARSERS,
                   help="HTML parser of link extraction (lexbor)")
    p.add_argument("--allow-domain", action="append", metavar="DOMAIN",
                   help="follow links of this domain and its subdomains only (repeatable)")
    p.add_argument("--include", action="append", metavar="REGEX",
                   help="follow only links whose canonical URL matches (repeatable)")
    p.add_argument("--exclude", action="append", metavar="REGEX",
                   help="do not follow links whose canonical URL matches (repeatable)")
    p.add_argument("--proxy", metavar="URL", help="send every request through this proxy")
    p.add_argument("--render", action="store_const", const=True,
                   help="render every page in a headless Chromium (JavaScript run) before "
                        "its links and items are read")
    p.add_argument("--render-include", action="append", metavar="REGEX",
                   help="render the pages whose canonical URL matches (repeatable)")
    p.add_argument("--render-wait", choices=WAITS,
                   help="load state a render waits for (load)")
    p.add_argument("--render-wait-for", metavar="SELECTOR",
                   help="then wait until this CSS selector is in the DOM")
    p.add_argument("--render-script", metavar="JS",
                   help="then run this JavaScript in the page")
    p.add_argument("--render-timeout", type=float, metavar="SECONDS", dest="render_timeout_s",
                   help="a render's bound (30); past it the page ends as render-timeout")
    p.add_argument("--screenshot", action="store_const", const=True,
                   help="store a PNG of each rendered page in its row")
    p.add_argument("--browser", metavar="PATH", dest="browser_path",
                   help="Chromium's executable (default: chromium on PATH)")
    p.add_argument("--config", metavar="FILE.toml")


def _crawl_flags(p: argparse.ArgumentParser) -> None:
    _fetch_flags(p)
    p.add_argument("seeds", nargs="*", metavar="SEED", help="seed URLs")
    p.add_argument("--seeds-file", metavar="PATH", help="file with one seed URL per line")
    p.add_argument("--out", metavar="DIR|URI", help="output folder, or a URI such as "
                   "s3://bucket/prefix (pages land in OUT/pages)")
    p.add_argument("--state", metavar="DIR", help="state folder (default OUT/state; required "
                   "with an --out URI)")
    p.add_argument("--max-pages", type=int, metavar="N")
    p.add_argument("--max-depth", type=int, metavar="N")
    p.add_argument("--strategy", metavar="NAME", help="bfs (default), dfs or module:Class")
    p.add_argument("--partitions", type=int, metavar="N")
    p.add_argument("--strategy-workers", type=int, metavar="N")
    p.add_argument("--db-workers", type=int, metavar="N")
    p.add_argument("--fetch-concurrency", type=int, metavar="N")
    p.add_argument("--fetch-workers", type=int, metavar="N",
                   help="at most N fetch workers (CPUs) for this crawl (default: its fair "
                        "share of the cluster)")
    p.add_argument("--max-fetch-workers", type=int, metavar="N",
                   help="ask the cluster's autoscaler for CPUs while the ready work wants "
                        "more fetch workers than the cluster has, up to N (default: never ask)")
    p.add_argument("--delay", type=float, metavar="SECONDS", dest="delay_s")
    p.add_argument("--per-host", type=int, metavar="N")
    p.add_argument("--max-rate", type=float, metavar="PAGES_PER_S", dest="max_pages_per_s",
                   help="at most this many fetches a second over the whole crawl (all its DB "
                        "workers), beside the per-host limits")
    p.add_argument("--burst", type=int, metavar="N",
                   help="fetches that may start at once beyond --max-rate (default: one "
                        "second's worth)")
    p.add_argument("--auto-throttle", action="store_const", const=True,
                   help="a host's delay follows its response times (never below --delay)")
    p.add_argument("--per-ip", type=int, metavar="N",
                   help="at most N requests at once to one IP address (per fetch worker), "
                        "whichever hosts they are for")
    p.add_argument("--max-pages-per-host", type=int, metavar="N")
    p.add_argument("--max-host-hops", type=int, metavar="N",
                   help="end as trap a URL more than N host changes away from a seed's host")
    p.add_argument("--log-streams", action="store_const", const=True,
                   help="also write the spider log to OUT/streams (Frontera protocol)")
    p.add_argument("--codec", choices=CODECS, help="codec of the stream files")
    p.add_argument("--spider", metavar="FILE.py:Class",
                   help="the spider whose callbacks extract items and choose the links "
                        "(or package.module:Class)")
    p.add_argument("--cookies", action="store_const", const=True,
                   help="keep the cookies each host sets and send them back to it")
    p.add_argument("--warc", action="store_const", const=True,
                   help="write every response to OUT/warc as WARC/1.1")
    p.add_argument("--recrawl-after", type=float, metavar="SECONDS", dest="recrawl_after_s",
                   help="revisit every fetched URL this long after its fetch (the crawl then "
                        "runs until --run-for, a stop, Ctrl-C or --max-pages fetches)")
    p.add_argument("--run-for", type=float, metavar="SECONDS", dest="run_for_s",
                   help="end the crawl this long after it began running (its workers up, "
                        "its seeds queued)")
    p.add_argument("--adaptive", action="store_const", const=True,
                   help="shrink a URL's revisit interval when its page changed, grow it when "
                        "not (within --recrawl-min .. --recrawl-max)")
    p.add_argument("--recrawl-min", type=float, metavar="SECONDS", dest="recrawl_min_s")
    p.add_argument("--recrawl-max", type=float, metavar="SECONDS", dest="recrawl_max_s")
    p.add_argument("--reseed-every", type=float, metavar="SECONDS", dest="reseed_every_s",
                   help="fetch the seeds again this often (their new links are followed)")
    p.add_argument("--sitemaps", action="store_const", const=True,
                   help="also crawl the URLs of the sitemaps robots.txt files name")
    p.add_argument("--render-memory", type=int, metavar="MB", dest="render_memory_mb",
                   help="memory reserved per browser (1024); the crawl runs no more fetch "
                        "workers than the cluster's memory holds browsers")
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   dest="checkpoint_every_s",
                   help="checkpoint the crawl's stores to OUT/_checkpoints this often (300; "
                        "0: never); a store lost with its disk is restored from the last one")
    p.add_argument("--address", metavar="RAY_ADDRESS")
    p.add_argument("--crawl-id", metavar="ID", help="name of the crawl (default: generated)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _scale_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db-workers", type=int, metavar="N",
                   help="rescale to N DB workers (default: as many as now)")
    p.add_argument("--strategy-workers", type=int, metavar="M",
                   help="rescale to M strategy workers (default: as many as now)")


def _crawl_place(p: argparse.ArgumentParser, required: bool) -> None:
    """Which crawl: its state folder, or its output (a folder or a URI, from any machine)."""
    place = p.add_mutually_exclusive_group(required=required)
    place.add_argument("--state", metavar="DIR", help="the crawl's state folder")
    place.add_argument("--out", metavar="DIR|URI",
                       help="the crawl's output (a folder, or s3://bucket/prefix and the like)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raycrawl", description="A distributed crawl frontier on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _crawl_flags(sub.add_parser("crawl", help="crawl from seed URLs"))
    resume = sub.add_parser("resume", help="continue a stopped or killed crawl")
    _crawl_place(resume, required=True)
    resume.add_argument("--address", metavar="RAY_ADDRESS")
    resume.add_argument("--quiet", action="store_true", help="no progress lines")
    _scale_flags(resume)
    scale = sub.add_parser("scale", help="move a running crawl's partitions to more or fewer "
                                         "workers")
    scale.add_argument("--state", metavar="DIR", required=True)
    scale.add_argument("--address", metavar="RAY_ADDRESS")
    _scale_flags(scale)
    status = sub.add_parser("status", help="what a crawl is doing / did")
    _crawl_place(status, required=False)
    listing = sub.add_parser("list", help="the crawls on a Ray cluster, one line each")
    listing.add_argument("--address", metavar="RAY_ADDRESS",
                         help="the cluster (default: RAY_ADDRESS, else a `ray start` one)")
    demo = sub.add_parser("demo", help="crawl the bundled synthetic web on loopback")
    demo.add_argument("--out", metavar="DIR", default="demo-out")
    demo.add_argument("--hosts", type=int, default=20)
    demo.add_argument("--pages", type=int, default=50, help="pages per host")
    demo.add_argument("--db-workers", type=int, default=2)
    demo.add_argument("--strategy-workers", type=int, default=2)
    demo.add_argument("--address", metavar="RAY_ADDRESS")
    parse = sub.add_parser("parse", help="fetch one URL and run a spider's callback on it (no "
                                         "crawl): its items, follows and links")
    parse.add_argument("url", metavar="URL")
    parse.add_argument("--spider", metavar="FILE.py:Class", required=True,
                       help="the spider (or package.module:Class)")
    parse.add_argument("--callback", metavar="NAME", help="the callback (default: parse)")
    parse.add_argument("--meta", metavar="JSON", help="response.meta, a JSON object")
    parse.add_argument("--json", action="store_true", help="print one JSON object")
    _fetch_flags(parse)
    web = sub.add_parser("synthweb", help="serve the synthetic web on loopback until Ctrl-C")
    web.add_argument("--hosts", type=int, default=20)
    web.add_argument("--pages", type=int, default=50, help="pages per host")
    web.add_argument("--seed", type=int, default=1)
    web.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    return parser


def _settings(args: argparse.Namespace, *not_settings: str) -> dict[str, Any]:
    """The config file's settings (``--config``), overridden by the flags given (all of
    ``args`` but ``command``, ``config`` and ``not_settings``)."""
    from raycrawl.config import read_toml

    values: dict[str, Any] = read_toml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items()
                   if v is not None and k not in ("command", "config", *not_settings)})
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    from raycrawl.config import config_from_mapping

    values = _settings(args, "quiet", "seeds")
    if args.seeds:
        values["seeds"] = args.seeds
    if "out" not in values:
        raise RaycrawlError("--out DIR is required (or 'out' in the config file)")
    return config_from_mapping(values)


def _progress_line(s: CrawlStatus) -> None:
    print(f"[{s.elapsed_s:6.1f}s] {status_line(s)}", flush=True)


def _summary(s: CrawlStatus) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.error_kinds.items()))
    pages = os.path.join(s.out, "pages")
    items = f", {s.items_total} items in {os.path.join(s.out, 'items')}" if s.items_total else ""
    return (f"crawl {s.crawl_id} {s.phase} ({s.reason}): {s.fetched} URLs fetched in "
            f"{s.elapsed_s} s, {s.errors} errors{f' ({kinds})' if kinds else ''}; "
            f"{s.rows_written} rows in {pages}{items}")


def run_crawl(config: Any, quiet: bool = False) -> CrawlStatus:
    from raycrawl.api import Crawl

    crawl = Crawl(config)
    crawl.check()  # bad seeds or strategy fail here, before Ray starts
    crawl.start()
    print(f"crawl {crawl.crawl_id} started; state in {crawl.config.state_dir}, "
          f"pages in {crawl.config.pages_dir}", flush=True)
    return _follow(crawl, quiet)


def _follow(crawl: Any, quiet: bool) -> CrawlStatus:
    """Wait for the crawl with a progress bar on a terminal (else progress lines every 2 s);
    Ctrl-C stops it cleanly."""
    bar = None if quiet or not sys.stderr.isatty() else ProgressBar(crawl.crawl_id,
                                                                    notebook=False)
    progress = None if quiet else bar or _progress_line
    try:
        return crawl.wait(progress=progress, interval_s=1.0 if bar else 2.0)
    except KeyboardInterrupt:
        print("interrupted: draining batches in flight and writing output...", flush=True)
        return crawl.stop()
    finally:
        if bar is not None:
            bar.close()


def _exit_status(stats: CrawlStatus, config: Any) -> int:
    """0 for a crawl that finished, or a revisiting one (it has no end of its own) stopped."""
    ended = stats.phase is Phase.FINISHED or (stats.phase is Phase.STOPPED and config.revisits)
    return 0 if ended else 1


def cmd_status(args: argparse.Namespace) -> int:
    from raycrawl.api import read_out_status, read_status

    s = (read_out_status(args.out) if args.out
         else read_status(args.state or os.path.join("out", "state")))
    age = time.time() - s.updated_at
    print(_summary(s))
    print(f"queued {s.queued}, in flight {s.in_flight_batches} batches, retries {s.retries}, "
          f"parked hosts {s.parked_hosts}, {s.pages_per_s} pages/s, depth gate {s.depth_gate}, "
          f"status written {age:.0f} s ago")
    print(f"fetch workers: {s.fetch_workers}" + (f" ({s.waiting})" if s.waiting else ""))
    if s.queued_by_reason:
        print(f"queued, by why they wait: {reasons_text(s)}")
    if s.stalls:
        print(f"stalls: {s.stalls} (queued URLs, nothing in flight, no wait: see the "
              f"coordinator's log)")
    if r := revisit_counters(s):
        print(f"revisits: {r.pop('revisits')}, " + ", ".join(f"{k} {v}" for k, v in r.items()))
    if s.warc_records:
        print(f"WARC records: {s.warc_records} responses in {os.path.join(s.out, 'warc')}")
    if s.out_of_scope:
        print(f"links out of scope (not followed): {s.out_of_scope}")
    if s.callback_errors:
        print(f"callback errors: {s.error_kinds.get('callback-error', 0)}; latest:")
        for line in s.callback_errors:
            print(f"  {line}")
    for i, w in enumerate(s.db_workers):
        trouble = "".join(f", {name.replace('_', ' ')} {value}" for name, value in (
            ("loop_errors", w.loop_errors), ("batches_failed", w.batches_failed),
            ("fetch_faults", w.fetch_faults),
            ("storage_error", w.storage_error)) if value)
        print(f"  db-worker-{i}{_on(w.node)}: queued {w.queued}, in flight {w.in_flight}, "
              f"fetched {w.fetched}, errors {w.errors}, fetch workers {fetch_workers_text(w)}"
              f"{trouble}; partitions {w.partitions or 'none'}")
    for i, sw in enumerate(s.strategy_workers):
        print(f"  strategy-worker-{i}{_on(sw.node)}: crawled {sw.pages_crawled}, "
              f"request errors {sw.request_errors}, scheduled {sw.scheduled}; "
              f"partitions {sw.partitions or 'none'}")
    if rescale := rescale_text(s):
        print("rescaling" + (" to " if s.rescale_to else "") + rescale)
    if checkpoint := checkpoint_text(s):
        print(f"checkpoint {checkpoint}")
    return 0


def _on(node: str) -> str:
    return f" on {node}" if node else ""


def _workers(args: argparse.Namespace) -> str:
    return ", ".join(f"{n} {what}" for n, what in ((args.db_workers, "DB workers"),
                                                  (args.strategy_workers, "strategy workers"))
                     if n)


def _check_scale_flags(args: argparse.Namespace) -> None:
    for flag, value in (("--db-workers", args.db_workers),
                        ("--strategy-workers", args.strategy_workers)):
        if value is not None and value < 1:
            raise RaycrawlError(f"{flag} must be at least 1, not {value}")


def cmd_scale(args: argparse.Namespace) -> int:
    """Rescale a running crawl; returns once every partition has moved."""
    from actors.handles import CoordinatorHandle, connect
    from raycrawl.api import Crawl, read_manifest

    if args.db_workers is None and args.strategy_workers is None:
        raise RaycrawlError("give --db-workers N and/or --strategy-workers M")
    _check_scale_flags(args)
    crawl_id = read_manifest(args.state)["crawl_id"]
    connect(args.address)
    handle = CoordinatorHandle.lookup(crawl_id)
    if handle is None or not handle.alive():
        raise RaycrawlError(f"crawl {crawl_id} is not running on this cluster: "
                            f"`raycrawl resume --state {args.state} --db-workers N` rescales "
                            f"a stopped crawl")
    crawl = Crawl.attach(args.state, address=args.address)
    print(f"crawl {crawl_id}: rescaling to {_workers(args)}", flush=True)
    started = time.monotonic()
    stats = crawl.scale(args.db_workers, args.strategy_workers)
    took = time.monotonic() - started
    if stats.moves_left or stats.moving:
        print(f"crawl {crawl_id} {stats.phase} after {took:.1f} s with {stats.moves_left} "
              f"partitions still to move (a resume carries the rescale on)", flush=True)
        return 1
    print(f"crawl {crawl_id}: rescaled in {took:.1f} s: {len(stats.db_workers)} DB workers, "
          f"{len(stats.strategy_workers)} strategy workers", flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """One line per crawl on the cluster, its id first."""
    from actors.handles import connect
    from actors.registry import list_crawls

    try:  # a running cluster only ("auto": RAY_ADDRESS, else a `ray start` one), none started
        connect(args.address or "auto", log_to_driver=False)
    except ConnectionError as exc:
        raise RaycrawlError(f"no Ray cluster to list: {exc}") from None
    crawls, cpus = list_crawls()
    for entry in crawls:
        print(entry.line(cpus, len(crawls)))
    if not crawls:
        print(f"no crawls on this cluster ({cpus} CPUs)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from raycrawl.config import CrawlConfig
    from raycrawl.output.durable import read_pages
    from raycrawl.storage.ownership import OUT_MARKER
    from raycrawl.testing.synthweb import SyntheticWeb

    if os.path.exists(os.path.join(args.out, OUT_MARKER)):  # an earlier demo's: start afresh
        print(f"removing the earlier crawl's output in {args.out}", flush=True)
        shutil.rmtree(args.out)
    web = SyntheticWeb(hosts=args.hosts, pages_per_host=args.pages).start()
    try:
        expected = web.reachable()
        print(f"synthetic web: {args.hosts} hosts x {args.pages} pages on 127.0.0.2-"
              f"{web.address(args.hosts - 1)}, {len(expected)} URLs reachable from "
              f"{web.seed_url}", flush=True)
        started = time.monotonic()
        config = CrawlConfig(
            seeds=(web.seed_url,), out=args.out, state=os.path.join(args.out, "state"),
            delay_s=0.0, retry_backoff_s=0.1, allow_network=("127.0.0.0/8",),
            db_workers=args.db_workers, strategy_workers=args.strategy_workers,
            address=args.address)
        stats = run_crawl(config)
        elapsed = time.monotonic() - started
    finally:
        web.stop()
    urls = read_pages(os.path.join(args.out, "pages")).column("url").to_pylist()
    missing = set(expected) - set(urls)
    dupes = len(urls) - len(set(urls))
    print(_summary(stats))
    unexpected = web.unexpected_hits(expected, config.retries + 1, robots=True)
    print(f"{len(urls)} rows for {len(expected)} reachable URLs: {len(missing)} missing, "
          f"{dupes} duplicates, {len(unexpected)} unexpected requests; "
          f"{len(urls) / elapsed:.0f} pages/s end to end ({elapsed:.1f} s with Ray start-up)")
    ok = not missing and not dupes and not unexpected and stats.phase is Phase.FINISHED
    return 0 if ok else 1


def cmd_parse(args: argparse.Namespace) -> int:
    """One callback on one URL: the items, follows and links it gives on stdout (one JSON
    object with ``--json``), its traceback on stderr; 0 when it ran and returned normally,
    1 when it raised or did not run (the reason printed), 2 for bad input."""
    import json

    from raycrawl.debugger import parse

    try:
        meta = json.loads(args.meta) if args.meta is not None else None
    except json.JSONDecodeError as exc:
        raise RaycrawlError(f"--meta: not JSON: {exc}") from None
    settings = _settings(args, "url", "spider", "callback", "meta", "json")
    settings.pop("out", None)  # (a crawl's config file may name one: nothing is written)
    result = parse(args.url, args.spider, args.callback, meta, **settings)
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result.text())
    if result.traceback:
        print(result.traceback, file=sys.stderr, end="")
    return 0 if result.ok else 1


def cmd_synthweb(args: argparse.Namespace) -> int:
    from raycrawl.testing.synthweb import SyntheticWeb

    web = SyntheticWeb(hosts=args.hosts, pages_per_host=args.pages, seed=args.seed).start()
    print(f"serving {args.hosts} hosts x {args.pages} pages; "
          f"{len(web.reachable())} URLs reachable from the seed:", flush=True)
    print(web.seed_url, flush=True)
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "crawl":
            config = config_from_args(args)
            stats = run_crawl(config, quiet=args.quiet)
            print(_summary(stats))
            return _exit_status(stats, config)
        if args.command == "resume":
            from raycrawl.api import Crawl

            _check_scale_flags(args)
            crawl = Crawl.attach(args.state or args.out, address=args.address)
            print(f"crawl {crawl.crawl_id} resumed from {crawl.config.state_dir}", flush=True)
            if args.db_workers or args.strategy_workers:
                crawl.scale(args.db_workers, args.strategy_workers, wait=False)
                print(f"rescaling to {_workers(args)}", flush=True)
            stats = _follow(crawl, args.quiet)
            print(_summary(stats))
            return _exit_status(stats, crawl.config)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "scale":
            return cmd_scale(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "parse":
            return cmd_parse(args)
        return cmd_synthweb(args)
    except CrawlUnavailable as exc:  # not bad input: the crawl may go on, `resume` follows it
        print(f"raycrawl: error: {exc}", file=sys.stderr)
        return 1
    except RaycrawlError as exc:
        print(f"raycrawl: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that cannot be created
        print(f"raycrawl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
