"""Where raycrawl's CPU goes: py-spy on its processes in the middle of a benchmark crawl.

    python -m benchmarks.profile --workload small --pages 1000 --seconds 12 --out /tmp/prof

Starts the benchmark web and ``raycrawl crawl`` as ``benchmarks.run`` does (same flags, same
limits), waits until ``--at`` of the web is fetched, then for ``--seconds``: ``py-spy record``
(raw collapsed stacks, aggregated by function) on each of raycrawl's processes (fetch workers,
DB worker, strategy worker, coordinator, the driver), and the CPU of every process and thread
of the crawl, and the machine's idle time.  Writes ``<role>-<pid>.txt`` (py-spy's stacks) and
``summary.md`` (per process: CPU share of a core, per thread, the top functions by self and by
total samples) into ``--out``.  The crawl then runs to its end; everything it started is reaped.
A larger web than the suite's (``--pages 1000``: 52k URLs) keeps the crawl in its steady state
for the whole window.  Needs ``py-spy`` in the venv (``pip install py-spy``) and ptrace rights.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace

import psutil

from .measure import _name, _reap, become_subreaper, machine_busy_s, own_cpu_s, server_stats
from .run import ROOT, WORKLOADS, Setup, WebServer, _bin, command
from .web import WebSpec

ROLES = ("FetchWorker", "DBWorker", "StrategyWorker", "Coordinator")


def _role(p: psutil.Process) -> str | None:
    name = _name(p)
    for role in ROLES:
        if role in name:
            return role
    if name == "raycrawl":
        return "driver"
    return None


def _threads(p: psutil.Process) -> dict[str, float]:
    """CPU seconds per thread name of ``p`` (threads of one name summed)."""
    out: dict[str, float] = defaultdict(float)
    for t in p.threads():
        try:
            with open(f"/proc/{p.pid}/task/{t.id}/comm") as f:
                name = f.read().strip()
        except OSError:
            name = "?"
        out[re.sub(r"\d+$", "", name) or name] += t.user_time + t.system_time
    return out


def _idle() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)  # idle + iowait, all


# Leaf frames of a thread that waits (py-spy cannot always tell): Ray's main thread, its GC
# thread, the event loop's poll.  With uvloop (Ray's async actors use it when installed) the
# loop's C code, waiting or not, shows as ``Thread.run``: counted as busy, and listed.
WAITING = ("Worker.main_loop (", "Condition.wait (", "Event.wait (", "select (selectors",
           "BaseSelectorEventLoop.select", "_worker (concurrent/futures/thread.py")


def summarise(path: str, cpu: float, top: int) -> list[str]:
    """The top functions of one py-spy raw file, by self and by total samples (those of
    waiting leaves left out); ``cpu``: the process's share of a core, to scale them."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = waiting = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [re.sub(r"^.*?site-packages/", "", fr) for fr in stack.split(";")[1:]]
            if not frames or frames[-1].startswith(WAITING):
                waiting += n
                continue
            samples += n
            own[frames[-1]] += n
            for fr in set(frames):
                total[fr] += n
    if not samples:
        return ["(no busy samples)"]
    lines = [f"{samples} busy samples ({waiting} waiting left out); the process used "
             f"{cpu:.0%} of a core", "", "| self % | function |", "|---|---|"]
    lines += [f"| {100 * n / samples:.1f} | `{fr}` |" for fr, n in own.most_common(top)]
    lines += ["", "| total % | function |", "|---|---|"]
    lines += [f"| {100 * n / samples:.1f} | `{fr}` |" for fr, n in total.most_common(2 * top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--hosts", type=int)
    parser.add_argument("--pages", type=int, help="per host (the preset's, or 100)")
    parser.add_argument("--page-kb", type=int)
    parser.add_argument("--links", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--per-host", type=int)
    parser.add_argument("--at", type=float, default=0.2, help="start at this share fetched")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--blocking", action="store_true",
                        help="py-spy pauses the process per sample (exact stacks, slower crawl)")
    parser.add_argument("--no-spy", action="store_true",
                        help="only the CPU per process and thread (no py-spy, no slowdown)")
    parser.add_argument("--native", action="store_true",
                        help="py-spy --native (C frames; implies --blocking)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--raycrawl-arg", action="append", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    for key, value in WORKLOADS[args.workload].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    spec = WebSpec()
    spec = replace(spec, hosts=args.hosts or spec.hosts, pages=args.pages or spec.pages,
                   page_bytes=1000 * args.page_kb if args.page_kb else spec.page_bytes,
                   out_degree=args.links or spec.out_degree)
    setup = Setup(args.concurrency or Setup.concurrency,
                  Setup.per_host if args.per_host is None else args.per_host,
                  raycrawl_args=tuple(args.raycrawl_arg))
    os.makedirs(args.out, exist_ok=True)
    become_subreaper()
    web = WebServer(spec)
    crawl_out = os.path.join(args.out, "crawl")
    shutil.rmtree(crawl_out, ignore_errors=True)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=ROOT)
    log = open(os.path.join(args.out, "crawl.log"), "wb")
    proc = subprocess.Popen(command("raycrawl", web.info["seed"], crawl_out, setup), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    report = [f"# raycrawl profile: {spec}", f"setup: {setup}", ""]
    try:
        while server_stats(web.info["control"])["fetches"] < args.at * spec.urls:
            if proc.poll() is not None:
                raise SystemExit("the crawl ended before the profile started")
            time.sleep(0.2)
        procs = {p.pid: (role, p) for p in psutil.Process().children(recursive=True)
                 if p.pid != web.proc.pid and (role := _role(p)) is not None}
        spies = []
        for pid, (role, _) in ({} if args.no_spy else procs).items():
            path = os.path.join(args.out, f"{role}-{pid}.txt")
            cmd = [_bin("py-spy"), "record", "--pid", str(pid), "--rate", str(args.rate),
                   "--duration", str(int(args.seconds)), "--format", "raw", "--function",
                   "--threads", "-o", path] + (["--native"] if args.native else []) + (
                       [] if args.blocking or args.native else ["--nonblocking"])
            with open(path + ".err", "wb") as err:
                spies.append((role, pid, path, subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=err)))
        every = psutil.Process().children(recursive=True)  # the web and py-spy too
        before = {p.pid: (p.cpu_times(), _threads(p)) for p in every if p.is_running()}
        idle0, all0 = _idle()
        busy0, own0 = machine_busy_s(), own_cpu_s()
        fetched0, t0 = server_stats(web.info["control"])["fetches"], time.monotonic()
        for *_, spy in spies:
            spy.wait(timeout=args.seconds + 120)
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))  # (py-spy failed?)
        idle1, all1 = _idle()
        busy1, own1 = machine_busy_s(), own_cpu_s()
        fetched1, t1 = server_stats(web.info["control"])["fetches"], time.monotonic()
        wall = t1 - t0
        pages = fetched1 - fetched0
        report += [f"window {wall:.1f} s, {pages} pages, {pages / wall:.0f} pages/s; machine "
                   f"busy {1 - (idle1 - idle0) / (all1 - all0):.0%} of its "
                   f"{psutil.cpu_count()} CPUs", "", "| process | pid | CPU % of a core | "
                   "ms/page | threads (CPU % of a core) |", "|---|---|---|---|---|"]
        rows, share, mine = [], {}, own1 - own0
        for p in every:
            if p.pid not in before:
                continue
            try:
                times, threads = p.cpu_times(), _threads(p)
            except psutil.NoSuchProcess:
                continue
            cpu = (times.user + times.system) - (before[p.pid][0].user + before[p.pid][0].system)
            share[p.pid] = cpu / wall
            mine += cpu
            if cpu < 0.01 * wall:
                continue
            per_thread = sorted(((name, s - before[p.pid][1].get(name, 0.0))
                                 for name, s in threads.items()), key=lambda x: -x[1])
            rows.append((cpu, f"| {_name(p)} | {p.pid} | {100 * cpu / wall:.0f} | "
                              f"{1000 * cpu / max(1, pages):.3f} | " + ", ".join(
                                  f"{n} {100 * s / wall:.0f}" for n, s in per_thread
                                  if s >= 0.01 * wall) + " |"))
        report += [r for _, r in sorted(rows, key=lambda r: -r[0])]
        report += ["", f"CPU of processes not started here (another load on the machine): "
                       f"{100 * (busy1 - busy0 - mine) / wall:.0f}% of a core"]
        for role, pid, path, _ in spies:
            report += ["", f"## {role} (pid {pid})", ""]
            report += (summarise(path, share.get(pid, 0.0), args.top)
                       if os.path.exists(path) else ["(py-spy wrote nothing)"])
        proc.wait(timeout=max(600.0, spec.urls / 100))
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        _reap({web.proc.pid}, deadline=time.monotonic() + 60, sample=lambda: None)
        web.close()
        log.close()
    text = "\n".join(report) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
