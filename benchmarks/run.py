"""raycrawl side by side with Scrapy and a bare asyncio loop, on one synthetic web, in one run.

    python -m benchmarks.run                  # comparison + latency on 30k, scale 100k (~15 min)
    python -m benchmarks.run --scale 1000000  # the 1M-URL frontier (raycrawl only, longer)

Every crawler runs against a fresh server of the same web (``benchmarks.web``) and is measured
the same way (``benchmarks.measure``): pages/s in steady state (between 10% and 90% of its final
fetch count, counted at the server), CPU-seconds per page over all its processes (exact, reaped
rusage; and the steady-state share from samples), peak RSS and PSS summed over its processes,
duplicate fetches and coverage of the reachable set (counted at the server).  Results go to
``benchmarks/results/<name>.json`` and ``.md``; ``--readme`` also puts the table in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import Any

from .args import CONCURRENCY, PER_HOST
from .measure import RunResult, become_subreaper, own_cpu_s, run_measured, server_stats
from .web import WebSpec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Setup:
    """What every runner is given: the same concurrency and per-host limit.

    128 requests in flight, near the 100 of Scrapy's broad-crawl advice: with 64, a web of
    50 ms median latency (57 ms mean) caps any crawler at 64 / 0.057 = 1129 pages/s, below
    0.9x what raycrawl and the bare loop do without latency, so the latency target would
    measure the cap, not the crawler (``results/log/`` keeps the runs at 64)."""

    concurrency: int = CONCURRENCY
    per_host: int = PER_HOST
    timeout_s: float = 1800.0  # per run, at least 100 pages/s of the web's size
    raycrawl_args: tuple[str, ...] = ()


def _cpus() -> int:
    """raycrawl's fetch workers: one per CPU, each with its share of the concurrency."""
    return len(os.sched_getaffinity(0))


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


SPIDERS = os.path.join(HERE, "spider.py")
NOSYNC = os.path.join(HERE, "nosync.toml")
# raycrawl, and raycrawl with a feature on (measured against plain raycrawl in the same run)
VARIANTS: dict[str, tuple[str, ...]] = {
    "raycrawl": (), "raycrawl-spider": ("--spider", f"{SPIDERS}:BenchSpider"),
    "raycrawl-spider-css": ("--spider", f"{SPIDERS}:CssSpider"), "raycrawl-warc": ("--warc",),
    "raycrawl-nosync": ("--config", NOSYNC), "raycrawl-before": (),
    "raycrawl-checkpoint": ("--checkpoint-every", "5")}
# raycrawl-before: the code of another checkout (``--before PATH``, e.g. a ``git worktree`` of
# the commit before a change) with this venv, to quote a change's cost in one interleaved run.
# It runs in that folder: Ray puts the driver's working directory first on its workers' path.
BEFORE: list[str] = []


def command(runner: str, seed: str, out: str, setup: Setup) -> list[str]:
    if runner in VARIANTS:
        return [_bin("raycrawl"), "crawl", seed, "--out", out, "--no-robots", "--delay", "0",
                "--per-host", str(setup.per_host), "--allow-network", "127.0.0.0/8",
                "--fetch-concurrency", str(setup.concurrency // _cpus()), "--quiet",
                *VARIANTS[runner], *setup.raycrawl_args]
    if runner == "scrapy":
        return [sys.executable, "-m", "benchmarks.scrapy_run", seed, "--out", out,
                "--concurrency", str(setup.concurrency), "--per-host", str(setup.per_host)]
    if runner == "bare":
        return [sys.executable, "-m", "benchmarks.bare", seed, "--out", out,
                "--concurrency", str(setup.concurrency), "--per-host", str(setup.per_host)]
    raise ValueError(f"unknown runner {runner!r}")


class WebServer:
    """``benchmarks.web`` in its own process (its CPU is the web's, not the crawler's)."""

    def __init__(self, spec: WebSpec) -> None:
        args = [sys.executable, "-m", "benchmarks.web"]
        for name, value in asdict(spec).items():
            args += ["--" + name.replace("_", "-"), str(value)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line:
            self.proc.kill()
            raise RuntimeError("the benchmark web did not start")
        self.info: dict[str, Any] = json.loads(line)

    def stats(self) -> dict[str, Any]:
        return server_stats(self.info["control"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _steady(samples: list[Any], lo: float = 0.1, hi: float = 0.9) -> tuple[float, float]:
    """(pages/s, CPU-s/page) between ``lo`` and ``hi`` of the final fetch count."""
    points = [(s.t, s.server.get("fetches", 0), s.cpu_s) for s in samples if s.server]
    if len(points) < 2:
        return 0.0, 0.0
    final = points[-1][1]
    a = next(p for p in points if p[1] >= lo * final)
    b = next(p for p in points if p[1] >= hi * final)
    if b[0] <= a[0] or b[1] <= a[1]:
        return 0.0, 0.0
    return (b[1] - a[1]) / (b[0] - a[0]), (b[2] - a[2]) / (b[1] - a[1])


def measure(runner: str, spec: WebSpec, setup: Setup, label: str, work: str) -> dict[str, Any]:
    web = WebServer(spec)
    out = os.path.join(work, f"{label}-{runner}")
    shutil.rmtree(out, ignore_errors=True)
    try:
        before = web.stats()
        own_before = own_cpu_s()  # (this harness samples the crawler's processes)
        env = dict(os.environ, RAY_AUTH_MODE="disabled",
                   PYTHONPATH=BEFORE[0] if runner == "raycrawl-before" else ROOT)
        print(f"  {label:>10} {runner:<9} {spec.urls} URLs ...", end="", flush=True)
        run: RunResult = run_measured(
            command(runner, web.info["seed"], out, setup), control_url=web.info["control"],
            exclude={web.proc.pid}, timeout_s=max(setup.timeout_s, spec.urls / 100), env=env,
            log_path=out + ".log", cwd=BEFORE[0] if runner == "raycrawl-before" else None)
        after = web.stats()
        own_cpu = own_cpu_s() - own_before
    finally:
        web.close()
    fetches = after["fetches"]
    steady_rate, steady_cpu = _steady(run.samples)
    served = after["requests"] - before["requests"]
    row = {
        "label": label, "runner": runner, "urls": spec.urls, "latency_ms": spec.latency_ms,
        "returncode": run.returncode, "timed_out": run.timed_out, "wall_s": round(run.wall_s, 2),
        "fetches": fetches, "distinct": after["distinct"], "duplicates": after["duplicates"],
        "coverage": round(after["coverage"], 5), "unexpected": after["unexpected"],
        "pages_per_s": round(steady_rate, 1),
        "pages_per_s_end_to_end": round(fetches / run.wall_s, 1) if run.wall_s else 0.0,
        "cpu_s": round(run.cpu_s, 2),
        "cpu_ms_per_page": round(1000 * run.cpu_s / fetches, 3) if fetches else None,
        "cpu_ms_per_page_steady": round(1000 * steady_cpu, 3),
        "peak_rss_mib": round(run.peak_rss / MiB, 1), "peak_pss_mib": round(run.peak_pss / MiB, 1),
        "server_cpu_us_per_response": round(
            1e6 * (after["cpu_s"] - before["cpu_s"]) / served, 1) if served else None,
        # the machine's CPU in the run used by none of the crawler, the web, the harness:
        # another load on the machine (it should be near 0; the cores are shared)
        "other_cpu_s": round(run.machine_cpu_s - run.cpu_s - own_cpu
                             - (after["cpu_s"] - before["cpu_s"]), 2),
        "cpu_s_by_process": {name: round(cpu, 2) for name, cpu in sorted(
            run.cpu_by_process.items(), key=lambda item: -item[1]) if cpu >= 0.05},
        "log": os.path.relpath(out + ".log", ROOT) if out.startswith(ROOT) else out + ".log",
    }
    print(f" {row['pages_per_s']} pages/s, {row['cpu_ms_per_page']} CPU-ms/page, "
          f"peak {row['peak_pss_mib']} MiB PSS, coverage {row['coverage']:.4f}, "
          f"{row['duplicates']} dup, exit {row['returncode']}, "
          f"other load {row['other_cpu_s']} CPU-s", flush=True)
    return row


# --max-other-cpu: a run during which processes not of the run used more CPU-s than this
# (another load on the shared machine: someone's tests) is run again, up to RERUNS times.
MAX_OTHER_CPU: list[float] = []
RERUNS = 5


def measure_clean(runner: str, spec: WebSpec, setup: Setup, label: str,
                  work: str) -> dict[str, Any]:
    """:func:`measure`, run again while another load shared the machine (``MAX_OTHER_CPU``)."""
    for rerun in range(RERUNS + 1):
        row = measure(runner, spec, setup, label, work)
        if not MAX_OTHER_CPU or row["other_cpu_s"] <= MAX_OTHER_CPU[0] or rerun == RERUNS:
            break
        print(f"  another load on the machine ({row['other_cpu_s']} CPU-s): run again in 20 s",
              flush=True)
        time.sleep(20)
    row["reruns"] = rerun
    return row


def measure_repeated(runner: str, spec: WebSpec, setup: Setup, label: str, work: str,
                     repeat: int) -> dict[str, Any]:
    """The run with the median steady pages/s of ``repeat`` runs (runs on a shared 2-core
    machine vary by about 10%), with every run's pages/s and CPU ms/page beside it."""
    return median_row([measure_clean(runner, spec, setup, label, work) for _ in range(repeat)])


def measure_interleaved(runners: list[str], spec: WebSpec, setup: Setup, label: str,
                        work: str, repeat: int) -> list[dict[str, Any]]:
    """``repeat`` rounds of one run of each runner in turn, so a machine that speeds up or
    slows down during the suite (this VM does, by up to 30% within minutes) weighs on every
    runner alike; each runner's row as in :func:`measure_repeated`."""
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in runners}
    for _ in range(repeat):
        for runner in runners:
            runs[runner].append(measure_clean(runner, spec, setup, label, work))
    return [median_row(runs[r]) for r in runners]


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    repeat = len(runs)  # (the lists below stay in run order: interleaved, round by round)
    row = dict(sorted(runs, key=lambda r: r["pages_per_s"])[len(runs) // 2])
    row["repeats"] = repeat
    row["pages_per_s_all"] = [r["pages_per_s"] for r in runs]
    row["cpu_ms_per_page_all"] = [r["cpu_ms_per_page"] for r in runs]
    row["cpu_ms_per_page_steady_all"] = [r["cpu_ms_per_page_steady"] for r in runs]
    row["other_cpu_s_all"] = [r["other_cpu_s"] for r in runs]
    return row


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    versions = {}
    for pkg in ("ray", "scrapy", "aiohttp", "parsel", "lxml", "rocksdict", "pyarrow", "uvloop",
                "twisted"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": model, "cpus": _cpus(), "memory_gib": round(mem / 2**30, 1),
            "system": platform.platform(), "python": platform.python_version(),
            "versions": versions}


# Named workloads (``--workload``): the web's shape and the limits every runner is given.  Flags
# given on the command line override a preset's values; "default" is the suite as it has always
# run, so older results stay comparable.
WORKLOADS: dict[str, dict[str, Any]] = {
    "default": {},
    # small pages: per-page overheads (Ray calls, Arrow rows, batches) weigh more than parsing
    "small": {"hosts": 50, "pages": 200, "page_kb": 8, "links": 8, "concurrency": 64,
              "per_host": 1},
}


def _spec_for(urls: int, base: WebSpec) -> WebSpec:
    """A web of about ``urls`` URLs: 100 pages per host up to 100k, then 1000 per host."""
    pages = 100 if urls <= 200_000 else 1000
    return replace(base, hosts=max(1, round(urls / pages / 1.04)), pages=pages)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def find(label: str, runner: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["label"] == label and r["runner"] == runner), None)

    out = []
    ray_, scrapy, bare = (find("compare", r) for r in ("raycrawl", "scrapy", "bare"))
    if ray_ and scrapy:
        ratio = ray_["pages_per_s"] / scrapy["pages_per_s"] if scrapy["pages_per_s"] else 0
        out.append({"target": "raycrawl pages/s >= 5x Scrapy's", "value": round(ratio, 2),
                    "met": ratio >= 5})
        cpu = ray_["cpu_ms_per_page"] / scrapy["cpu_ms_per_page"]
        out.append({"target": "raycrawl CPU-s/page <= 1/4 of Scrapy's",
                    "value": round(cpu, 2), "met": cpu <= 0.25})
    if ray_ and bare:
        ratio = ray_["pages_per_s"] / bare["pages_per_s"] if bare["pages_per_s"] else 0
        out.append({"target": "stretch: raycrawl pages/s >= 1.0x bare asyncio",
                    "value": round(ratio, 2), "met": ratio >= 1.0})
    spider = find("compare", "raycrawl-spider")
    if ray_ and spider:
        ratio = spider["pages_per_s"] / ray_["pages_per_s"] if ray_["pages_per_s"] else 0
        out.append({"target": "a spider (an item per page, every link) costs <= 10% pages/s",
                    "value": round(ratio, 2), "met": ratio >= 0.9})
    css = find("compare", "raycrawl-spider-css")
    if ray_ and css:
        ratio = css["pages_per_s"] / ray_["pages_per_s"] if ray_["pages_per_s"] else 0
        out.append({"target": "(no target) a spider that parses each page with parsel",
                    "value": round(ratio, 2), "met": True})
    nosync = find("compare", "raycrawl-nosync")
    if ray_ and nosync:  # the same crawl without fsync of acknowledged writes
        ratio = ray_["pages_per_s"] / nosync["pages_per_s"] if nosync["pages_per_s"] else 0
        out.append({"target": "synced writes cost <= 5% pages/s", "value": round(ratio, 2),
                    "met": ratio >= 0.95})
    warc = find("compare", "raycrawl-warc")
    if ray_ and warc:
        ratio = warc["pages_per_s"] / ray_["pages_per_s"] if ray_["pages_per_s"] else 0
        out.append({"target": "--warc costs <= 15% pages/s", "value": round(ratio, 2),
                    "met": ratio >= 0.85})
    before = find("compare", "raycrawl-before")
    if ray_ and before:  # the same crawl with the code of --before
        ratio = ray_["pages_per_s"] / before["pages_per_s"] if before["pages_per_s"] else 0
        out.append({"target": "(no target) this code's pages/s over --before's",
                    "value": round(ratio, 2), "met": True})
    slow = find("latency", "raycrawl")
    if ray_ and slow:
        ratio = slow["pages_per_s"] / ray_["pages_per_s"] if ray_["pages_per_s"] else 0
        out.append({"target": "50 ms latency: throughput >= 0.9x zero latency",
                    "value": round(ratio, 2), "met": ratio >= 0.9})
    scale = sorted((r for r in rows if r["label"].startswith("scale") and r["runner"] ==
                    "raycrawl"), key=lambda r: r["urls"])
    big = [r for r in scale if r["urls"] >= 900_000]
    if big:
        peak = big[-1]["peak_rss_mib"]
        out.append({"target": "1M-URL frontier: peak memory <= 4 GiB (RSS sum)",
                    "value": peak, "met": peak <= 4096})
    mid = [r for r in scale if 90_000 <= r["urls"] < 900_000]
    if big and mid:
        ratio = big[-1]["peak_pss_mib"] / mid[-1]["peak_pss_mib"]
        out.append({"target": "memory flat from 100k to 1M (PSS ratio <= 1.25)",
                    "value": round(ratio, 2), "met": ratio <= 1.25})
    return out


COLUMNS = [("label", "run"), ("runner", "crawler"), ("urls", "URLs"),
           ("latency_ms", "latency ms"), ("pages_per_s", "pages/s steady"),
           ("pages_per_s_all", "pages/s each run"),
           ("pages_per_s_end_to_end", "pages/s end to end"), ("cpu_ms_per_page", "CPU ms/page"),
           ("cpu_ms_per_page_steady", "CPU ms/page steady"), ("peak_rss_mib", "peak RSS MiB"),
           ("peak_pss_mib", "peak PSS MiB"), ("coverage", "coverage"),
           ("duplicates", "dup fetches"), ("server_cpu_us_per_response", "web µs/resp"),
           ("other_cpu_s", "other load CPU-s")]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, {m['system']}, "
             f"Python {m['python']}; {result['date']}. Web: {result['web']}. "
             f"Workload {result.get('workload', 'default')}: "
             f"{result['setup']['concurrency']} requests in flight, "
             f"{result['setup']['per_host']} per host.", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in result["runs"]:
        lines.append("| " + " | ".join(_cell(row.get(key, "")) for key, _ in COLUMNS) + " |")
    if result["targets"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
                  for t in result["targets"]]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def update_readme(name: str, table: str) -> None:
    """Put ``table`` between README.md's ``<!-- benchmark:NAME:start/end -->`` markers."""
    path = os.path.join(ROOT, "README.md")
    with open(path) as f:
        text = f.read()
    begin, end_mark = f"<!-- benchmark:{name}:start -->", f"<!-- benchmark:{name}:end -->"
    start, end = text.find(begin), text.find(end_mark)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {begin} ... {end_mark} markers")
    text = text[:start + len(begin)] + "\n" + table + text[end:]
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=30_000, help="size of the comparison web")
    parser.add_argument("--runners", default="raycrawl,scrapy,bare")
    parser.add_argument("--scale", default="100000",
                        help="comma-separated frontier sizes for raycrawl alone ('' for none)")
    parser.add_argument("--no-compare", action="store_true", help="only the scale curve")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--no-latency", action="store_true", help="skip the 50 ms latency runs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per comparison row; the median is reported")
    parser.add_argument("--scrapy-repeat", type=int, default=1,
                        help="runs of Scrapy (each takes minutes)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="default",
                        help="a preset of the web's shape and the limits below (small: 50 hosts "
                             "x 200 pages of ~8 KB with 8 links, 64 in flight, 1 per host)")
    parser.add_argument("--hosts", type=int, default=None,
                        help="hosts of the comparison web (with --pages; instead of --urls)")
    parser.add_argument("--pages", type=int, default=None,
                        help=f"pages per host of the comparison web ({WebSpec.pages})")
    parser.add_argument("--page-kb", type=int, default=None,
                        help=f"HTML per page, KB ({WebSpec.page_bytes // 1000})")
    parser.add_argument("--links", type=int, default=None,
                        help=f"links per page ({WebSpec.out_degree})")
    parser.add_argument("--concurrency", type=int, default=None,
                        help=f"requests in flight, every runner ({Setup.concurrency})")
    parser.add_argument("--per-host", type=int, default=None,
                        help=f"requests in flight per host, every runner ({Setup.per_host})")
    parser.add_argument("--raycrawl-arg", action="append", default=[],
                        help="extra raycrawl flag (repeatable): --raycrawl-arg=--db-workers=2")
    parser.add_argument("--name", default="latest", help="results file name")
    parser.add_argument("--readme", action="store_true",
                        help="put the table in README.md (between benchmark:NAME markers)")
    parser.add_argument("--work", default=None, help="folder for crawl output (a temp dir)")
    parser.add_argument("--interleave", action="store_true",
                        help="compare runs: one of each runner in turn, --repeat rounds")
    parser.add_argument("--max-other-cpu", type=float, default=None, metavar="CPU_S",
                        help="run again a run during which other processes used more CPU "
                             f"seconds than this (up to {RERUNS} times; e.g. 2)")
    parser.add_argument("--before", metavar="PATH",
                        help="a checkout of earlier code, run as the runner raycrawl-before")
    args = parser.parse_args(argv)
    if args.before:
        BEFORE.append(os.path.abspath(args.before))
    elif "raycrawl-before" in args.runners:
        parser.error("the runner raycrawl-before needs --before PATH")
    for key, value in WORKLOADS[args.workload].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.max_other_cpu is not None:
        MAX_OTHER_CPU.append(args.max_other_cpu)
    become_subreaper()
    setup = Setup(Setup.concurrency if args.concurrency is None else args.concurrency,
                  Setup.per_host if args.per_host is None else args.per_host,
                  raycrawl_args=tuple(args.raycrawl_arg))
    runners = [r for r in args.runners.split(",") if r]
    base = WebSpec()
    if args.page_kb is not None:
        base = replace(base, page_bytes=1000 * args.page_kb)
    if args.links is not None:
        base = replace(base, out_degree=args.links)
    work = args.work or tempfile.mkdtemp(prefix="raycrawl-bench-")
    os.makedirs(work, exist_ok=True)
    rows, webs = [], []
    if args.hosts is None and args.pages is None:
        compare_spec = _spec_for(args.urls, base)
    else:  # the web's shape given: --urls does not apply
        pages = args.pages or base.pages
        compare_spec = replace(base, pages=pages,
                               hosts=args.hosts or max(1, round(args.urls / pages / 1.04)))
    if not args.no_compare:
        webs.append(f"compare and latency, {_describe(compare_spec)}")
        if args.interleave:
            rows += measure_interleaved(runners, compare_spec, setup, "compare", work,
                                        args.repeat)
        else:
            for runner in runners:
                rows.append(measure_repeated(runner, compare_spec, setup, "compare", work,
                                             args.scrapy_repeat if runner == "scrapy"
                                             else args.repeat))
        slow = replace(compare_spec, latency_ms=args.latency_ms)
        for runner in [r for r in runners if r != "scrapy" and not args.no_latency]:
            rows.append(measure_repeated(runner, slow, setup, "latency", work, args.repeat))
    for size in [int(s) for s in args.scale.split(",") if s]:
        spec = _spec_for(size, base)
        webs.append(f"scale-{size}, {_describe(spec)}")
        rows.append(measure_clean("raycrawl", spec, setup, f"scale-{size}", work))
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "workload": args.workload, "setup": asdict(setup), "web": "; ".join(webs),
              "runs": rows, "targets": targets(rows)}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, args.name + ".json"), "w") as f:
        json.dump(result, f, indent=2)
    table = markdown(result)
    with open(os.path.join(RESULTS, args.name + ".md"), "w") as f:
        f.write(table)
    print()
    print(table)
    if args.readme:
        update_readme(args.name, table)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _describe(spec: WebSpec) -> str:
    return (f"{spec.hosts} hosts x {spec.pages} pages ({spec.urls} URLs), "
            f"~{spec.page_bytes // 1000} KB pages, {spec.out_degree} links/page "
            f"({round(100 * spec.same_host)}% same host)")


if __name__ == "__main__":
    sys.exit(main())
