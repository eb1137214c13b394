"""The DB worker's batch cut as the queue drains: CPU per cut against what was taken before.

A queue of ``--urls`` entries (links arrive in runs of ``--run`` URLs of one host, as a page's
same-host links do) is cut the way the DB worker's feed loop cuts it: batches of the default
size and per-host cap, six in flight, the oldest completed (its hosts released) before the next
cut.
Two variants on identical queues, in the same run:

- ``seek``: the queue as it is (a cut seeks to the first key not taken by earlier cuts);
- ``first-key``: every cut scans from the first queue key, as before the seek point existed,
  walking the tombstones RocksDB keeps for every entry already leased.

It prints, per tenth of the drain, milliseconds of CPU per cut and per URL cut, and writes
``results/queue-cut.json``.  The number that matters is the ratio of the last tenth to the first
(flat is 1.0)::

    .venv/bin/python -m benchmarks.queue_cut --urls 300000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import tempfile
import time
from collections import deque
from typing import Any

from raycrawl.config import CrawlConfig
from raycrawl.db_worker.politeness import HostSlots
from raycrawl.db_worker.queue import Entry, FrontierQueue
from raycrawl.storage.store import Store
from raycrawl.urls import partition_of

IN_FLIGHT = 6


def _entries(urls: int, hosts: int, run: int, seed: int = 1,
             partitions: int = CrawlConfig().partitions) -> list[Entry]:
    """``urls`` entries of ``hosts`` hosts, in runs of ``run`` of one host, each in its
    host's partition (of ``partitions``)."""
    rng = random.Random(seed)
    out: list[Entry] = []
    while len(out) < urls:
        host = f"h{rng.randrange(hosts)}.test"
        for _ in range(min(run, urls - len(out))):
            fp = len(out)
            out.append(Entry(f"http://{host}/{fp}", fp, host, partition_of(host, partitions), 1,
                             1.0))
    return out


def cut_once(queue: FrontierQueue, slots: HostSlots, in_flight: deque[tuple[int, list[Entry]]],
             promote: bool = False) -> tuple[float, list[Entry]]:
    """One pass of the feed loop: (promote what is due and) cut a batch of the default size
    and per-host cap, timing its CPU; then complete the oldest batch in flight once
    ``IN_FLIGHT`` are (or nothing was cut), releasing its hosts.  Returns (CPU s, cut)."""
    defaults = CrawlConfig()
    start = time.thread_time()  # this thread's: RocksDB's flushes and compactions run in
    # threads of their own, at times unrelated to the cut (they made the figures noisy)
    if promote and queue.not_due:
        queue.promote(time.time())
    batch_id, got = queue.cut(defaults.batch_size, defaults.host_batch_cap, slots, None)
    cpu = time.thread_time() - start
    if got:
        in_flight.append((batch_id, got))
    if len(in_flight) >= IN_FLIGHT or (in_flight and not got):
        done_id, done = in_flight.popleft()
        wb = queue.store.batch()
        completion = queue.complete(wb, done_id, [(e.partition, e.fingerprint) for e in done])
        queue.store.write(wb)
        queue.apply(completion)
        slots.release({e.host for e in done}, time.monotonic())
    return cpu, got


def drain(entries: list[Entry], path: str, from_first_key: bool,
          tenths: int = 10) -> list[dict[str, float]]:
    """Cut the whole queue; per tenth of it: CPU ms per cut and per URL, and URLs per cut."""
    queue = FrontierQueue(Store(path), layered=False)
    for i in range(0, len(entries), 5000):
        queue.push(entries[i:i + 5000])
    slots: HostSlots = HostSlots(0.0)
    in_flight: deque[tuple[int, list[Entry]]] = deque()
    step = len(entries) / tenths
    rows: list[dict[str, float]] = []
    cpu = 0.0
    cuts = taken = mark = 0
    while queue.queued or in_flight:
        if from_first_key:
            queue.head = {}  # each partition's first key
        spent, got = cut_once(queue, slots, in_flight)
        cpu += spent
        cuts += 1
        taken += len(got)
        if taken - mark >= step or not (queue.queued or in_flight):
            rows.append({"taken": taken, "urls": taken - mark, "ms_per_cut": 1e3 * cpu / cuts,
                         "us_per_url": 1e6 * cpu / max(1, taken - mark),
                         "urls_per_cut": (taken - mark) / cuts})
            cpu = cuts = 0
            mark = taken
    queue.store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=300_000)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--run", type=int, default=20, help="URLs of one host in a row")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "queue-cut.json"))
    args = parser.parse_args(argv)
    entries = _entries(args.urls, args.hosts, args.run)
    # The entries stay alive for both variants: out of the cyclic GC's sight, as a DB
    # worker holds none of them (walking them would be most of the cut's cost).
    gc.freeze()
    result: dict[str, Any] = {"urls": args.urls, "hosts": args.hosts, "run": args.run}
    for name, from_first in (("seek", False), ("first-key", True)):
        with tempfile.TemporaryDirectory() as tmp:
            rows = drain(entries, tmp, from_first)
        result[name] = rows
        full = [r for r in rows if r["urls"] >= 0.5 * args.urls / 10]  # not a small remainder
        growth = full[-1]["us_per_url"] / full[0]["us_per_url"]
        result[f"{name}_growth"] = growth
        print(f"{name:>9}: µs of CPU per URL cut, by tenth of the drain: "
              + " ".join(f"{r['us_per_url']:.0f}" for r in rows)
              + f"  (last tenth / first: {growth:.2f})", flush=True)
    save(args.out, result)
    return 0


def save(path: str, result: dict[str, Any]) -> None:
    """Write a micro-benchmark's result as JSON (its folder made if needed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
