"""The stores at scale: bytes on disk per URL, time to open a DB shard, time to move a partition.

One process fills a DB worker's store and a strategy worker's store through the real code
paths, without Ray or a network, the way a crawl's batches go through them:
``DBShard.cut`` -> ``triage`` -> ``feed`` -> (a made-up fetch) -> ``learn_robots`` ->
``settle`` -> ``release_hosts`` -> ``StrategyRunner.process_spider_log`` -> ``DBShard.enqueue``
-> ``StrategyRunner.commit`` -> ``DBShard.complete``, starting from ``--seeds`` host home pages
(``add_seeds``), until ``--urls`` URLs were seen.  Each page fetched links ``--new-links`` URLs
never seen (80% of its own host, the rest of any of ``--hosts`` hosts) and ``--known-links``
URLs of its host seen before, so about one URL seen in ``new-links`` is fetched (10% by
default), the rest stay queued.  URLs are 60-90 bytes; pages answer 200 (3% 404) with a
realistic spider-log row; every origin's robots.txt is read once.  The config is the default
(256 partitions, BFS, robots on) but for ``delay_s`` 0 (no clock to wait for) and
``sync_writes`` off (fsync changes the fill's speed, not the bytes).

Then it measures:

1. bytes on disk of each store (every file of its folder, and the SST files alone) after a
   memtable flush (as a running crawl leaves them, tombstones of leased entries included) and
   after a full manual compaction; and per table, each table's keys written to an SST file of
   its own with the store's options (what the table costs compacted), divided by what it is
   per (URLs seen: ``f``/``s`` keys; pages fetched: ``p`` keys; URLs queued: ``q`` keys);
2. one partition (the median by queued URLs) moved, in the filling process (its hosts'
   politeness in memory, as in a running worker): ``export_partition`` (its PartitionCopy's
   size), ``adopt_partition`` into a new store, ``drop_partition`` at the source, for the DB
   shard and the strategy runner;
3. in a fresh process, the time (wall, CPU) and memory (RSS growth and peak) to open the DB
   shard (``DBShard(...)``) after a clean close (``FrontierQueue.close`` kept its counts) and
   as after a crash (``FrontierQueue.__init__`` counts every queued entry: its peak is the
   process's, after the first open), and the strategy store, then a cProfile of
   ``DBShard(...)`` in another fresh process (hot spots by own time, file:line);
4. the fill's wall and CPU time per step, and its rate (URLs seen per second).

Results go to ``results/store-scale.json`` (``--out``); the stores are made under ``--tmp``
(default /tmp) and deleted after (``--keep`` to keep them)::

    nice -n 10 taskset -c 1 .venv/bin/python -m benchmarks.store_scale --urls 20000
    nice -n 10 taskset -c 1 .venv/bin/python -m benchmarks.store_scale --urls 10000000

(``taskset``: RocksDB's background flushes and compactions are threads of the process; pinned,
the whole benchmark uses one core.)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import gc
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from rocksdict import SstFileWriter

from benchmarks.queue_cut import save
from raycrawl.config import CrawlConfig
from raycrawl.db_worker.queue import COUNTS_KEY
from raycrawl.db_worker.shard import DBShard
from raycrawl.formats.schemas import FetchOutcome, LinkFound, RobotsFetch, ended_rows, feed_batch
from raycrawl.storage.store import Store, _options
from raycrawl.strategy_worker.runner import STRATEGY_TABLES, StrategyRunner
from raycrawl.urls import url_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("news", "world", "sport", "market", "garden", "travel", "recipe", "review", "guide",
         "city", "local", "health", "science", "music", "film", "books", "history", "energy",
         "climate", "startup", "football", "election", "weather", "family", "design", "coffee",
         "mountain", "river", "ocean", "forest", "island", "summer", "winter", "autumn",
         "spring", "museum", "theatre", "concert", "festival", "school", "college", "library",
         "hospital", "airport", "station", "harbour", "village", "county", "region", "nation")
SECTIONS = ("news", "blog", "articles", "products", "category/shop", "en/docs", "forum/topic",
            "events", "people", "reviews")
TLDS = ("com", "org", "net", "de", "fr", "co.uk", "io", "info", "nl", "es")
ROBOTS_TXT = (b"User-agent: *\nDisallow: /admin/\nDisallow: /cart/\nDisallow: /search\n"
              b"Allow: /search/help\n\nSitemap: https://example.com/sitemap.xml\n")
MIB = 1 << 20


class Web:
    """A made-up web of ``hosts`` hosts: URL ``i`` of host ``h`` is always the same string
    (so a link to a URL seen before is one of its host's first ``made[h]``)."""

    def __init__(self, hosts: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.names = [self._host(h) for h in range(hosts)]
        self.index = {name: h for h, name in enumerate(self.names)}
        self.made = [0] * hosts  # URLs of each host handed out so far (home page aside)

    @staticmethod
    def _host(h: int) -> str:
        w = WORDS
        return f"www.{w[h % 50]}-{w[(h // 50) % 50]}{h // 2500}.{TLDS[(h * 7) % 10]}"

    def url(self, h: int, i: int) -> str:
        """Half articles with a slug (a path template of their own), 30% items by number
        (one template), 20% pages with a query (one shape per path and query keys)."""
        x = (h * 2654435761 + i * 40503) & 0xFFFFFFFF
        w = WORDS
        base = f"https://{self.names[h]}/{SECTIONS[x % 10]}/"
        kind = (x >> 20) % 10
        if kind < 5:
            slug = "-".join(w[(x >> (8 + 5 * k)) % 50] for k in range(2 + (x >> 28) % 3))
            return f"{base}{2010 + (x >> 4) % 15}/{1 + (x >> 9) % 12:02d}/{slug}-{i}.html"
        if kind < 8:
            return f"{base}{w[(x >> 8) % 50]}/item/{w[(x >> 14) % 50]}-{i}"
        return f"{base}{w[(x >> 8) % 50]}/list?page={i}&sort={w[(x >> 14) % 4]}&view=grid"

    def home(self, h: int) -> str:
        return f"https://{self.names[h]}/"

    def new(self, h: int) -> str:
        i = self.made[h]
        self.made[h] += 1
        return self.url(h, i)

    def known(self, h: int) -> str:
        n = self.made[h]
        return self.home(h) if n == 0 else self.url(h, self.rng.randrange(n))


class Steps:
    """Wall and CPU seconds per step of the fill."""

    def __init__(self) -> None:
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()

    @contextlib.contextmanager
    def __call__(self, name: str):  # type: ignore[no-untyped-def]
        w, c = time.perf_counter(), time.process_time()
        yield
        self.wall[name] += time.perf_counter() - w
        self.cpu[name] += time.process_time() - c


def spider_log(web: Web, entries: list[Any], new: int, known: int, share_same_host: float,
               partitions: int, rng: random.Random) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """What a fetch worker would hand over for ``entries``: page rows and their links."""
    now = datetime.now(UTC)
    pages = []
    cols = LinkFound.columns()
    for e in entries:
        h = web.index[e.host]
        status = 404 if rng.random() < 0.03 else 200
        pages.append(FetchOutcome(
            e.url, e.fingerprint, e.host, e.partition, e.depth, status=status,
            content_type="text/html; charset=utf-8", fetched_at=now,
            size_bytes=rng.randrange(5_000, 200_000), duration_s=rng.uniform(0.05, 1.5),
            links_count=new + known, attempts=1, etag=f'"{rng.getrandbits(48):012x}"',
            last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
            digest=rng.getrandbits(160).to_bytes(20, "big"), changed=True))
        if status != 200:
            continue
        links = [web.known(h) for _ in range(known)]
        for _ in range(new):
            target = h if rng.random() < share_same_host else rng.randrange(len(web.names))
            links.append(web.new(target))
        for link in links:
            info = url_info(link, partitions)
            cols["parent_url"].append(e.url)
            cols["parent_depth"].append(e.depth)
            cols["url"].append(info.url)
            cols["fingerprint"].append(info.fingerprint)
            cols["host"].append(info.host)
            cols["partition"].append(info.partition)
            cols["depth"].append(e.depth + 1)
    n = len(cols["url"])
    for name in ("redirect_chain",):
        cols[name] = [[]] * n
    for name in ("callback", "meta", "priority", "method", "headers", "body", "interval_s",
                 "modified_at"):
        cols[name] = [None] * n
    cols["hops"] = [0] * n
    return FetchOutcome.to_batch(pages), LinkFound.batch_of(cols)


def robots_rows(feed: pa.RecordBatch, rng: random.Random) -> pa.RecordBatch:
    """The robots.txt fetches of the feed's origins that asked for one (1 in 3: a 404)."""
    origins: dict[str, str] = {}
    for url, host, needed in zip(feed.column("url").to_pylist(), feed.column("host").to_pylist(),
                                 feed.column("robots_needed").to_pylist()):
        if needed:
            origins.setdefault(url[:url.index("/", 8)], host)
    rows = []
    for origin, host in origins.items():
        ok = rng.random() < 2 / 3
        rows.append(RobotsFetch(origin, host, 200 if ok else 404, ROBOTS_TXT if ok else b"",
                                None))
    return RobotsFetch.to_batch(rows)


def make_config(root: str) -> CrawlConfig:
    return CrawlConfig(out=os.path.join(root, "out"), state=os.path.join(root, "state"),
                       delay_s=0.0, sync_writes=False, crawl_id="store-scale")


def fill(args: argparse.Namespace, config: CrawlConfig) -> tuple[DBShard, StrategyRunner,
                                                                  dict[str, Any]]:
    rng = random.Random(7)
    web = Web(args.hosts)
    steps = Steps()
    shard = DBShard(config, 0)
    sstore = Store(os.path.join(config.state_dir, "strategy-worker-0"), sync=config.sync_writes,
                   tables=STRATEGY_TABLES)
    runner = StrategyRunner(config, sstore)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with steps("seeds"):
        seeds = feed_batch(url_info(web.home(h), config.partitions)
                           for h in range(min(args.seeds, args.hosts)))
        shard.enqueue(runner.add_seeds(seeds))
        runner.commit()
    seen = lambda: runner.counters["scheduled"] + sum(runner.skipped.values())  # noqa: E731
    fetched = batches = 0
    marks = [args.urls * k // 10 for k in range(1, 11)]
    progress = []
    while seen() < args.urls:
        with steps("cut"):
            batch_id, entries = shard.cut(shard.wanted(None), None)
        if not entries:
            raise RuntimeError(f"the queue ran dry at {seen()} URLs seen")
        with steps("triage+feed"):
            triage = shard.triage(entries)
            feed = shard.feed(triage.fetch)
        with steps("fetch (made up)"):
            robots = robots_rows(feed, rng)
            pages, links = spider_log(web, [e for e, _ in triage.fetch], args.new_links,
                                      args.known_links, 0.8, config.partitions, rng)
        with steps("learn_robots"):
            shard.learn_robots(robots)
        with steps("settle+release"):
            pages, retry = shard.settle(pages, [e for e, _ in triage.fetch])
            if triage.ended:  # (robots.txt disallowed them: none with these URLs)
                pages = pa.concat_batches([pages, ended_rows(triage.ended)])
            shard.release_hosts({e.host for e in entries})
        with steps("strategy"):
            scoring = runner.process_spider_log(pages, links)
        with steps("enqueue"):
            shard.enqueue(scoring)
        with steps("commit"):
            runner.commit()
        with steps("complete"):
            shard.complete(batch_id, pages, retry, None, entries)
            shard.finish_batch()
        fetched += pages.num_rows
        batches += 1
        while marks and seen() >= marks[0]:
            marks.pop(0)
            w = time.perf_counter() - wall0
            progress.append({"seen": seen(), "fetched": fetched, "wall_s": round(w, 1),
                             "urls_per_s": round(seen() / w)})
            print(f"  {seen():>10,} seen {fetched:>9,} fetched {w:8.0f} s "
                  f"{seen() / w:7.0f} URLs/s  queued {shard.queue.queued:,}", flush=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = seen()
    urls = web.made
    lengths = [len(web.url(h, i)) for h in rng.sample(range(args.hosts), 200)
               for i in range(min(20, urls[h]))]
    result = {
        "seen": n, "fetched": fetched, "queued": shard.queue.queued, "batches": batches,
        "skipped": dict(runner.skipped), "hosts_with_urls": sum(1 for m in urls if m),
        "url_bytes_mean": round(statistics.mean(lengths), 1) if lengths else None,
        "url_bytes_p5_p95": [sorted(lengths)[len(lengths) // 20],
                             sorted(lengths)[len(lengths) * 19 // 20]] if lengths else None,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "urls_seen_per_s": round(n / wall),
        "pages_per_s": round(fetched / wall),
        "steps": {k: {"wall_s": round(steps.wall[k], 1), "cpu_s": round(steps.cpu[k], 1),
                      "urls_seen_per_s": round(n / steps.wall[k]) if steps.wall[k] else None}
                  for k in steps.wall},
        "progress": progress,
    }
    return shard, runner, result


# -- bytes on disk -----------------------------------------------------------------------------


def folder_bytes(path: str) -> dict[str, int]:
    """Bytes of a RocksDB folder's files: ``data`` (all but RocksDB's info logs ``LOG*``, which
    grow with every open and hold no data), SST, WAL (``*.log``), info logs, the rest
    (MANIFEST, OPTIONS, CURRENT...)."""
    out = Counter({"data": 0, "sst": 0, "wal": 0, "info_log": 0, "other": 0})
    for name in os.listdir(path):
        size = os.path.getsize(os.path.join(path, name))
        kind = ("sst" if name.endswith(".sst") else "wal" if name.endswith(".log")
                else "info_log" if name.startswith("LOG") else "other")
        out[kind] += size
        out["data"] += size if kind != "info_log" else 0
    return dict(out)


def table_bytes(store: Store, folder: str) -> dict[str, dict[str, int]]:
    """Per table letter: keys, their key and value bytes, and the size of an SST file of its
    keys alone written with the store's options (bloom filter, compression)."""
    tables: dict[str, dict[str, int]] = {}
    writer = None
    current = None
    for key, value in store.scan(b"", b"\xff"):
        letter = key[:1].decode() if key[:1] != b"\x00" else "\\x00 (layout, fences)"
        if letter != current:
            if writer is not None:
                writer.finish()
            current = letter
            tables[letter] = {"keys": 0, "key_bytes": 0, "value_bytes": 0}
            writer = SstFileWriter(_options())
            writer.open(os.path.join(folder, f"table-{ord(letter[0])}.sst"))
        t = tables[letter]
        t["keys"] += 1
        t["key_bytes"] += len(key)
        t["value_bytes"] += len(value)
        writer[key] = value
    if writer is not None:
        writer.finish()
    for letter, t in tables.items():
        path = os.path.join(folder, f"table-{ord(letter[0])}.sst")
        t["sst_bytes"] = os.path.getsize(path)
        os.remove(path)
    return tables


def measure_bytes(store: Store, compact: bool) -> dict[str, Any]:
    store.db.flush(True)
    if compact:
        store.db.compact_range(None, None)
    return folder_bytes(store.path)


# -- moving a partition ------------------------------------------------------------------------


def timed(fn, *a):  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, {"wall_s": round(time.perf_counter() - w, 3),
                 "cpu_s": round(time.process_time() - c, 3)}


def move(shard: DBShard, runner: StrategyRunner, config: CrawlConfig) -> dict[str, Any]:
    by_part = shard.queue.by_part
    part = sorted(by_part, key=lambda p: by_part[p])[len(by_part) // 2]
    queued = by_part[part]
    target = DBShard(config, 1, owned=set())
    fence_t = None
    if hasattr(shard, "fence"):  # (the move protocol being written: fence, then export)
        in_flight, fence_t = timed(shard.fence, [part])
        assert in_flight == 0
    copy, export_t = timed(shard.export_partition, part)
    _, adopt_t = timed(target.adopt_partition, copy)
    take_t = None
    if hasattr(target, "take"):  # (adopt holds the copy, take counts it)
        _, take_t = timed(target.take, [part])
    assert target.queue.by_part[part] == queued, (target.queue.by_part[part], queued)
    _, drop_t = timed(shard.drop_partition, part)
    db = {"partition": part, "queued": queued, "keys": copy.keys,
          "copy_bytes": len(copy.sst or b""),
          "memory_hosts": sum(len(v) for v in copy.memory.get("hosts", {}).values()),
          "fence": fence_t, "export": export_t, "adopt": adopt_t, "take": take_t,
          "drop": drop_t}
    target.close()
    sstore = Store(os.path.join(config.state_dir, "strategy-worker-1"), sync=config.sync_writes,
                   tables=STRATEGY_TABLES)
    other = StrategyRunner(config, sstore)
    sfence_t = None
    if hasattr(runner, "fence"):
        _, sfence_t = timed(runner.fence, [part])
    scopy, export_t = timed(runner.export_partition, part)
    _, adopt_t = timed(other.adopt_partition, scopy)
    _, drop_t = timed(runner.drop_partition, part)
    sstore.close()
    return {"db": db, "strategy": {"partition": part, "keys": scopy.keys,
                                   "copy_bytes": len(scopy.sst or b""), "fence": sfence_t,
                                   "export": export_t,
                                   "adopt": adopt_t, "drop": drop_t}}


# -- opening (in a fresh process) --------------------------------------------------------------


def _rss() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def open_child(root: str, profile: bool, moved: int) -> dict[str, Any]:
    """Open the stores of ``root`` (run in a fresh process), the DB shard owning what it
    owned when it closed: every partition but ``moved``."""
    config = make_config(root)
    owned = set(range(config.partitions)) - {moved}
    before = _rss()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        shard = DBShard(config, 0, owned)
        prof.disable()
        shard.close()
        stats = pstats.Stats(prof)
        rows = []
        total = stats.total_tt  # type: ignore[attr-defined]
        for (file, line, func), (_, calls, tt, ct, _) in sorted(
                stats.stats.items(), key=lambda kv: -kv[1][2])[:14]:  # type: ignore[attr-defined]
            rows.append({"where": f"{os.path.relpath(file, ROOT) if file.startswith('/') else file}"
                                  f":{line}({func})", "calls": calls, "own_s": round(tt, 2),
                         "cum_s": round(ct, 2)})
        return {"profiled_total_s": round(total, 2), "hot": rows}
    (shard, t) = timed(DBShard, config, 0, owned)
    after = _rss()
    result = {"db_shard": {**t, "queued": shard.queue.queued, "hosts": len(shard.queue.hosts),
                           "rss_growth_mib": round((after["VmRSS"] - before["VmRSS"]) / MIB),
                           "peak_rss_growth_mib": round((after["VmHWM"] - before["VmRSS"]) / MIB)}}
    # Is the memory held, or freed and not given back?  (glibc keeps freed heap otherwise)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    result["db_shard"]["rss_growth_after_malloc_trim_mib"] = round(
        (_rss()["VmRSS"] - before["VmRSS"]) / MIB)
    shard.close()
    # As after a crash (no clean close kept the counts): every queued entry is counted again.
    store = Store(os.path.join(config.state_dir, "db-worker-0"), False, b"")
    wb = store.batch()
    wb.delete(COUNTS_KEY)
    store.write(wb)
    store.close()
    (shard, t) = timed(DBShard, config, 0, owned)
    result["db_shard_recounted"] = {**t, "queued": shard.queue.queued,
                                    "peak_rss_growth_mib": round(
                                        (_rss()["VmHWM"] - before["VmRSS"]) / MIB)}
    shard.close()
    store_t = timed(Store, os.path.join(config.state_dir, "db-worker-0"), False,
                    b"")
    store_t[0].close()
    result["db_store_alone"] = store_t[1]
    (sstore, t) = timed(Store, os.path.join(config.state_dir, "strategy-worker-0"), False,
                        STRATEGY_TABLES)
    runner, t2 = timed(StrategyRunner, config, sstore)
    result["strategy"] = {"store": t, "runner": t2}
    sstore.close()
    return result


def run_child(root: str, profile: bool, moved: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.store_scale", "--open-child", root, "--moved",
           str(moved)]
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- main --------------------------------------------------------------------------------------


def per(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 1) if denominator else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=1_000_000, help="URLs seen to fill to")
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=1_000)
    parser.add_argument("--new-links", type=int, default=10, help="new URLs a page links")
    parser.add_argument("--known-links", type=int, default=20,
                        help="URLs of its host seen before a page links")
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "store-scale.json"))
    parser.add_argument("--open-child", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--moved", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.open_child:
        print(json.dumps(open_child(args.open_child, args.profile, args.moved)))
        return 0

    root = tempfile.mkdtemp(prefix="store-scale-", dir=args.tmp)
    try:
        result = run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    save(args.out, result)
    return 0


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    config = make_config(root)
    result: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()
                                       if k not in ("open_child", "profile", "moved")},
                              "partitions": config.partitions, "sync_writes": False}
    print(f"filling {root} to {args.urls:,} URLs seen", flush=True)
    shard, runner, result["fill"] = fill(args, config)
    f = result["fill"]
    print(f"fill: {f['seen']:,} seen, {f['fetched']:,} fetched, {f['queued']:,} queued in "
          f"{f['wall_s']} s ({f['urls_seen_per_s']} URLs/s)", flush=True)
    shard.flush()  # staged page rows to OUT/pages: their keys go
    sizes: dict[str, Any] = {"db": {}, "strategy": {}}
    sizes["db"]["after_flush"] = measure_bytes(shard.store, compact=False)
    sizes["strategy"]["after_flush"] = measure_bytes(runner.states.store, compact=False)
    print("bytes after a memtable flush:", sizes["db"]["after_flush"],
          sizes["strategy"]["after_flush"], flush=True)

    result["move"] = move(shard, runner, config)
    print("move:", result["move"], flush=True)
    shard.close()
    runner.states.store.close()

    moved = result["move"]["db"]["partition"]
    result["open"] = run_child(root, profile=False, moved=moved)
    print("open:", result["open"], flush=True)
    if not args.no_profile:
        result["open_profile"] = run_child(root, profile=True, moved=moved)
        print("open profile:", json.dumps(result["open_profile"], indent=1), flush=True)

    # Compacted, and per table (one partition fewer: the one moved out)
    for name, sub, tables in (("db", "db-worker-0", b""), ("strategy", "strategy-worker-0",
                                                           STRATEGY_TABLES)):
        store = Store(os.path.join(config.state_dir, sub), sync=False, tables=tables)
        sizes[name]["compacted"] = measure_bytes(store, compact=True)
        sizes[name]["tables"] = table_bytes(store, root)
        store.close()
    pages_dir = config.pages_dir
    sizes["out_pages_parquet"] = sum(os.path.getsize(os.path.join(pages_dir, n))
                                     for n in os.listdir(pages_dir))
    result["bytes"] = sizes
    result["per_url"] = per_url(result)
    print("per URL:", json.dumps(result["per_url"], indent=1), flush=True)
    return result


def per_url(result: dict[str, Any]) -> dict[str, Any]:
    """Bytes per URL seen, page fetched, URL queued: totals over each count (of the fill, for
    the store as filled; of the store's own keys, compacted) and per table."""
    fill = result["fill"]
    sizes = result["bytes"]
    db_t, st_t = sizes["db"]["tables"], sizes["strategy"]["tables"]
    keys = lambda t, k: t.get(k, {}).get("keys", 0)  # noqa: E731
    sst = lambda t, k: t.get(k, {}).get("sst_bytes", 0)  # noqa: E731
    seen, fetched, queued = keys(db_t, "f"), keys(db_t, "p"), keys(db_t, "q")
    out: dict[str, Any] = {"counts_compacted": {"seen": seen, "fetched": fetched,
                                                "queued": queued, "strategy_states": keys(
                                                    st_t, "s")}}
    for name in ("db", "strategy"):
        filled = sizes[name]["after_flush"]["data"]
        compacted = sizes[name]["compacted"]["data"]
        out[name] = {
            "after_flush_data_per_seen": per(filled, fill["seen"]),
            "after_flush_data_per_fetched": per(filled, fill["fetched"]),
            "after_flush_data_per_queued": per(filled, fill["queued"]),
            "compacted_data_per_seen": per(compacted, seen),
            "compacted_data_per_fetched": per(compacted, fetched),
            "compacted_data_per_queued": per(compacted, queued),
        }
    out["db"]["tables"] = {
        "f per URL seen": per(sst(db_t, "f"), seen),
        "q per URL queued": per(sst(db_t, "q"), queued),
        "p per page fetched": per(sst(db_t, "p"), fetched),
        "r per host with robots": per(sst(db_t, "r"), keys(db_t, "r")),
        "other tables (bytes)": sum(t["sst_bytes"] for k, t in db_t.items()
                                    if k not in ("f", "q", "p", "r")),
    }
    out["strategy"]["tables"] = {
        "s per URL seen": per(sst(st_t, "s"), keys(st_t, "s")),
        "T per URL seen": per(sst(st_t, "T"), keys(st_t, "s")),
        "other tables (bytes)": sum(t["sst_bytes"] for k, t in st_t.items()
                                    if k not in ("s", "T")),
    }
    out["out_pages_parquet_per_fetched"] = per(sizes["out_pages_parquet"], fill["fetched"])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
