"""What many partitions cost a DB worker: its queue's memory, opening it, and the cut.

The same ``--urls`` entries (``--hosts`` hosts, runs of 20 URLs of one host, as
``queue_cut.py``) are queued with each number of partitions of ``--partitions`` (each host in
its partition of that many), then:

- **memory**: the bytes Python holds for the queue's counts once it is filled (tracemalloc:
  the per-partition and per-host tables a queue keeps in memory);
- **open**: wall and CPU time to open a queue on that store (its counts are recounted from
  the keys);
- **cut**: CPU µs per URL cut as the queue drains (the feed loop's cut, six batches in
  flight, as ``queue_cut.py``), over the whole drain.

It prints one line per partition count and writes ``results/partitions.json``; the pages/s of
a crawl at each count come from ``benchmarks.run --raycrawl-arg=--partitions=N``::

    .venv/bin/python -m benchmarks.partitions --urls 300000 --partitions 64,256,1024
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections import deque
from typing import Any

from benchmarks.queue_cut import _entries, cut_once, save
from raycrawl.db_worker.politeness import HostSlots
from raycrawl.db_worker.queue import Entry, FrontierQueue
from raycrawl.storage.store import Store


def measure(urls: int, hosts: int, partitions: int) -> dict[str, Any]:
    entries = _entries(urls, hosts, run=20, partitions=partitions)
    with tempfile.TemporaryDirectory() as path:
        tracemalloc.start()
        queue = FrontierQueue(Store(path), layered=False)
        for i in range(0, len(entries), 5000):
            queue.push(entries[i:i + 5000])
        memory, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        queue.store.close()
        wall, cpu = time.perf_counter(), time.process_time()
        queue = FrontierQueue(Store(path), layered=False)
        open_wall, open_cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert queue.queued == urls
        slots = HostSlots(0.0)
        in_flight: deque[tuple[int, list[Entry]]] = deque()
        spent, cuts, taken = 0.0, 0, 0
        while queue.queued or in_flight:
            cpu_s, got = cut_once(queue, slots, in_flight)
            spent, cuts, taken = spent + cpu_s, cuts + 1, taken + len(got)
        queue.store.close()
    return {"partitions": partitions, "queue_memory_mib": round(memory / 2**20, 1),
            "open_wall_s": round(open_wall, 3), "open_cpu_s": round(open_cpu, 3),
            "cut_us_per_url": round(1e6 * spent / taken, 2), "urls_per_cut": taken / cuts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=300_000)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--partitions", default="64,256,1024")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "partitions.json"))
    args = parser.parse_args(argv)
    rows = []
    for partitions in (int(p) for p in args.partitions.split(",")):
        row = measure(args.urls, args.hosts, partitions)
        rows.append(row)
        print(f"{partitions:5d} partitions: queue memory {row['queue_memory_mib']} MiB, "
              f"open {row['open_wall_s']} s, cut {row['cut_us_per_url']} µs/URL "
              f"({row['urls_per_cut']:.0f} URLs a cut)", flush=True)
    save(args.out, {"urls": args.urls, "hosts": args.hosts, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
