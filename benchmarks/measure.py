"""Running one crawler as a process tree and measuring all of it.

The harness makes itself a child subreaper (Linux ``prctl``), so processes a crawler leaves
behind (Ray's daemons) are re-parented to it, stay visible to it and are reaped by it.  The tree
is sampled every ``interval`` seconds: CPU time per process (user + system, the last value seen,
zombies included; reaped ``RUSAGE_CHILDREN`` is not used because Ray's raylet is itself a
subreaper and reaps its workers out of our sight), the sum of RSS and the sum of PSS (shared pages
split between their users, so Ray's shared object store is not counted once per process).  A
process's last ``interval`` of CPU before it is reaped elsewhere is the measurement's error.
"""


from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

PR_SET_CHILD_SUBREAPER = 36


def own_cpu_s() -> float:
    """CPU seconds of this process so far, every thread's (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Sample:
    t: float  # seconds since the start of the run
    rss: int
    pss: int
    cpu_s: float  # CPU seconds of the tree so far (live processes + those seen before)
    server: dict[str, object]  # the web's counters at that time


@dataclass
class RunResult:
    returncode: int | None
    wall_s: float
    cpu_s: float  # every process of the tree, sampled
    samples: list[Sample] = field(default_factory=list)
    timed_out: bool = False
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # by process name
    machine_cpu_s: float = 0.0  # every CPU of the machine was busy this long, all processes

    @property
    def peak_rss(self) -> int:
        return max((s.rss for s in self.samples), default=0)

    @property
    def peak_pss(self) -> int:
        return max((s.pss for s in self.samples), default=0)


def server_stats(control_url: str) -> dict[str, object]:
    with urllib.request.urlopen(control_url, timeout=10) as resp:
        return json.loads(resp.read())


def _tree(exclude: set[int]) -> list[psutil.Process]:
    procs = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in exclude:
            continue
        procs.append(child)
    return procs


def run_measured(cmd: list[str], *, control_url: str, exclude: set[int], timeout_s: float,
                 interval: float = 0.25, env: dict[str, str] | None = None,
                 cwd: str | None = None,
                 log_path: str | None = None) -> RunResult:
    """Run ``cmd`` to its end (or ``timeout_s``), sampling its process tree and the web's
    counters; then reap every process it left behind (killing stragglers after 60 s)."""
    excluded = set(exclude)
    for pid in exclude:  # the web server's own children, if any
        try:
            excluded.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    log = open(log_path or os.devnull, "wb")
    busy_before = machine_busy_s()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    result = RunResult(None, 0.0, 0.0)
    seen_cpu: dict[tuple[int, float], float] = {}
    names: dict[tuple[int, float], str] = {}
    count = [0]
    stop = threading.Event()

    def sample() -> None:
        rss = pss = 0
        count[0] += 1
        with_pss = count[0] % 4 == 1  # PSS walks page tables: every fourth sample
        for p in _tree(excluded):
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    key = (p.pid, p.create_time())
                    seen_cpu[key] = times.user + times.system
                    name = _name(p)  # a Ray worker's title changes with its task
                    old = names.get(key)
                    # An exiting process's name is cut to 15 characters: keep the whole one.
                    if old is None or (name != "ray::IDLE" and not old.startswith(name)):
                        names[key] = name
                    if p.status() == psutil.STATUS_ZOMBIE:
                        continue
                    rss += p.memory_info().rss
                pss += _pss_bytes(p.pid) if with_pss else 0
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        pss = pss if with_pss else (result.samples[-1].pss if result.samples else 0)
        try:
            stats = server_stats(control_url)
        except OSError:
            stats = {}
        result.samples.append(Sample(time.monotonic() - started, rss, pss,
                                     sum(seen_cpu.values()), stats))

    def sampler() -> None:
        while not stop.wait(interval):
            sample()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result.returncode = proc.returncode
    result.wall_s = time.monotonic() - started
    stop.set()
    thread.join()
    _reap(excluded, deadline=time.monotonic() + 60, sample=sample)  # counts shutdown CPU too
    result.cpu_s = result.samples[-1].cpu_s
    result.machine_cpu_s = machine_busy_s() - busy_before
    for key, cpu in seen_cpu.items():
        name = names.get(key, "?")
        result.cpu_by_process[name] = result.cpu_by_process.get(name, 0.0) + cpu
    log.close()
    return result


def machine_busy_s() -> float:
    """CPU seconds the machine's CPUs have been busy since boot (``/proc/stat``: not idle and
    not waiting for I/O), every process's: a run's share of it that is neither the crawler's
    nor the web's nor the harness's was someone else's (the machine is shared)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:7]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # no steal


def _name(p: psutil.Process) -> str:
    """A process's role: Ray's title without the method running (``ray::DBWorker``,
    ``raylet``) or the script it runs."""
    name = p.name()
    if name.startswith("ray::"):
        return name.split(".", 1)[0]
    if name.startswith("python"):
        args = p.cmdline()
        script = next((a for a in args[1:] if not a.startswith("-")), "")
        if "-m" in args:
            script = args[args.index("-m") + 1]
        elif "-c" in args:
            script = "python -c"
        name = os.path.basename(script) or name
    return name


def _reap(excluded: set[int], deadline: float, sample: Callable[[], None]) -> None:
    """Wait for every descendant (except ``excluded``), sampling it on the way; SIGKILL what
    is left at ``deadline``."""
    killed = False
    while True:
        sample()
        left = _tree(excluded)
        if not left or time.monotonic() > deadline + 30:  # give up on unkillable stragglers
            return
        for p in left:
            try:
                if p.ppid() == os.getpid():
                    os.waitpid(p.pid, os.WNOHANG)
            except (ChildProcessError, psutil.NoSuchProcess):
                pass
        if time.monotonic() > deadline and not killed:
            for p in left:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            killed = True
        time.sleep(0.2)
