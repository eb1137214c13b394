"""Revisiting crawls over time: memory and disk stay flat, adaptive intervals find each page's
change period.

    python -m benchmarks.revisits memory --minutes 10          # 10,000 URLs revisited
    python -m benchmarks.revisits adaptive --minutes 8        # interval vs true change period

Both run the ``raycrawl crawl`` command (its own local Ray) against a
``raycrawl.testing.changingweb`` web served from this process on loopback, and write
``benchmarks/results/revisits-<mode>-<name>.json`` and ``.md``.

*memory*: 50 hosts x 200 pages (10,000 URLs; a fifth of the pages change every 2 minutes),
``--recrawl-after 60``.  Every 5 s: the RSS of each process of the crawl's tree (by role), the
size of the state folder, URLs fetched.  Reported at the end of the first pass (every URL
fetched once), half way and at the end: flat memory and state, growing output.

*adaptive*: 2 hosts x 40 pages, changing every 5, 10, 20 or 40 s or never (8 pages each per
host, each validator mix among them), ``--adaptive --recrawl-after 20 --recrawl-min 1
--recrawl-max 320``.  Per page, the gaps between its last visits (its interval, as the crawl
used it) against its true change period, with and without ``Last-Modified``; with Nutch's rates
(grow 1.4, shrink 0.8) the interval settles at ln 1.4 / (ln 1.4 - ln 0.8) = 0.6 of the period
(see ``raycrawl.db_worker.revisits``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any

import psutil

from benchmarks.measure import _name, become_subreaper
from raycrawl.api import read_status
from raycrawl.errors import CrawlStateError
from raycrawl.output.durable import read_pages
from raycrawl.testing.changingweb import ChangingWeb, validators_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
MiB = 1024 * 1024
PERIODS = (5.0, 10.0, 20.0, 40.0, None)


def _du(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def _fetched(state: str) -> int:
    try:
        return read_status(state).fetched
    except CrawlStateError:  # not written yet
        return 0


def run_crawl(web: ChangingWeb, out: str, flags: list[str], seconds: float
              ) -> tuple[int, list[dict[str, Any]]]:
    """Run ``raycrawl crawl`` for ``seconds`` (``--run-for``), sampling its process tree every
    5 s; returns (exit status, samples)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [os.path.join(os.path.dirname(sys.executable), "raycrawl"), "crawl", web.seed_url,
           "--out", out, "--no-robots", "--delay", "0", "--per-host", "2",
           "--allow-network", "127.0.0.0/8", "--address", "local", "--quiet",
           "--run-for", str(seconds), *flags]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=ROOT)
    env.pop("RAY_ADDRESS", None)
    log = open(out + ".log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        by_role: dict[str, int] = defaultdict(int)
        for p in me.children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    by_role[_name(p)] += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        state = os.path.join(out, "state")
        samples.append({"t": round(time.monotonic() - started, 1), "fetched": _fetched(state),
                        "rss_mib": round(sum(by_role.values()) / MiB, 1),
                        "by_role_mib": {k: round(v / MiB, 1) for k, v in sorted(by_role.items())},
                        "state_mib": round(_du(state) / MiB, 2),
                        "pages_mib": round(_du(os.path.join(out, "pages")) / MiB, 2)})

    def sampler() -> None:
        while not stop.wait(5.0):
            sample()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        code = proc.wait(timeout=seconds + 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -9
    stop.set()
    thread.join()
    log.close()
    return code, samples


WORKERS = ("ray::DBWorker", "ray::StrategyWorker", "ray::FetchWorker", "ray::Coordinator")


def memory(args: argparse.Namespace) -> dict[str, Any]:
    web = ChangingWeb(lambda h, i: 120.0 if i % 5 == 0 else None, hosts=50,
                      pages_per_host=200, out_degree=8).start()
    urls = len(web.reachable())
    try:
        out = os.path.join(args.work, "revisits-memory")
        code, samples = run_crawl(web, out, ["--recrawl-after", "60"], args.minutes * 60)
        pages = read_pages(os.path.join(out, "pages"))
    finally:
        web.stop()
    first = next((s for s in samples if s["fetched"] >= urls), samples[-1])
    middle = min(samples, key=lambda s: abs(s["t"] - (first["t"] + samples[-1]["t"]) / 2))
    points = {"first pass done": first, "half way": middle, "end": samples[-1]}
    visits = pages.column("visit").to_pylist()
    result = {
        "mode": "memory", "urls": urls, "minutes": args.minutes, "exit": code,
        "rows": pages.num_rows, "revisits": sum(v > 1 for v in visits),
        "max_visit": max(visits, default=0),
        "changed_revisits": sum(1 for v, c in zip(visits, pages.column("changed").to_pylist())
                                if v > 1 and c),
        "points": points, "samples": samples}
    rows = ["| point | t (s) | fetched | tree RSS (MiB) | " + " | ".join(
        w.removeprefix("ray::") for w in WORKERS) + " | state (MiB) | pages (MiB) |",
            "| --- " * (7 + len(WORKERS)) + "|"]
    for label, s in points.items():
        roles = " | ".join(str(s["by_role_mib"].get(w, "-")) for w in WORKERS)
        rows.append(f"| {label} | {s['t']} | {s['fetched']} | {s['rss_mib']} | {roles} | "
                    f"{s['state_mib']} | {s['pages_mib']} |")
    result["table"] = "\n".join(rows)
    return result


def adaptive(args: argparse.Namespace) -> dict[str, Any]:
    def period(host: int, index: int) -> float | None:
        return PERIODS[(index // 4) % len(PERIODS)]

    web = ChangingWeb(period, hosts=2, pages_per_host=40, out_degree=4, cross_host=0.5).start()
    try:
        out = os.path.join(args.work, "revisits-adaptive")
        code, _ = run_crawl(web, out, ["--recrawl-after", "20", "--adaptive", "--recrawl-min",
                                       "1", "--recrawl-max", "320"], args.minutes * 60)
        pages = read_pages(os.path.join(out, "pages"))
    finally:
        web.stop()
    by_url: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in pages.to_pylist():
        by_url[row["url"]].append(row)
    groups: dict[tuple[float | None, bool], list[float]] = defaultdict(list)
    visits: dict[tuple[float | None, bool], list[int]] = defaultdict(list)
    for url, rows in by_url.items():
        rows.sort(key=lambda r: r["visit"])
        index = int(url.rsplit("/", 1)[1].split("?")[0])
        gaps = [(b["fetched_at"] - a["fetched_at"]).total_seconds()
                for a, b in zip(rows, rows[1:])]
        key = (period(0, index), validators_of(index)[1])
        visits[key].append(len(rows))
        if len(gaps) >= 4:
            groups[key].append(statistics.median(gaps[-6:]))
    table = ["| true period (s) | Last-Modified | pages | median interval at the end (s) | "
             "interval / period | visits per page |", "| --- | --- | --- | --- | --- | --- |"]
    summary = []
    for (p, modified), settled in sorted(groups.items(), key=lambda kv: (kv[0][0] or 1e9,
                                                                          kv[0][1])):
        median = statistics.median(settled)
        ratio = f"{median / p:.2f}" if p else "-"
        table.append(f"| {p or 'never'} | {'yes' if modified else 'no'} | {len(settled)} | "
                     f"{median:.1f} | {ratio} | {statistics.median(visits[(p, modified)]):.0f} |")
        summary.append({"period_s": p, "last_modified": modified, "pages": len(settled),
                        "median_interval_s": round(median, 2)})
    return {"mode": "adaptive", "minutes": args.minutes, "exit": code, "rows": pages.num_rows,
            "groups": summary, "table": "\n".join(table)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.revisits", description=__doc__)
    parser.add_argument("mode", choices=("memory", "adaptive"))
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--name", default="latest")
    parser.add_argument("--work", default=None, help="folder for crawl output (a temp dir)")
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 10.0 if args.mode == "memory" else 8.0
    args.work = args.work or tempfile.mkdtemp(prefix="raycrawl-revisits-")
    become_subreaper()
    result = (memory if args.mode == "memory" else adaptive)(args)
    base = os.path.join(RESULTS, f"revisits-{args.mode}-{args.name}")
    with open(base + ".json", "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    with open(base + ".md", "w") as fh:
        fh.write(result["table"] + "\n")
    print(result["table"])
    print(f"exit {result['exit']}, {result['rows']} rows; {base}.json")
    return 0 if result["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
