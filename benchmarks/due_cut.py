"""The cut of a revisiting frontier: URLs not due cost nothing.

Two queues in the same run, each with ``--due`` URLs whose time has come (they wait in the
time index until it does, then are promoted and cut the way the DB worker cuts: promote, then
batches of the default size and per-host cap, six in flight):

- ``alone``: nothing else;
- ``waiting``: plus ``--waiting`` URLs due in an hour (a 1M-URL revisiting frontier between
  two passes).

It prints CPU µs per URL cut (promote included) for both and their ratio (1.0: the URLs not
due are never read), and writes ``results/due-cut.json``::

    .venv/bin/python -m benchmarks.due_cut --waiting 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import tempfile
import time
from collections import deque
from typing import Any

from benchmarks.queue_cut import _entries, cut_once, save
from raycrawl.db_worker.politeness import HostSlots
from raycrawl.db_worker.queue import FrontierQueue
from raycrawl.formats.entry import Entry
from raycrawl.storage.store import Store


def drain(path: str, due: int, waiting: int, hosts: int) -> dict[str, float]:
    queue = FrontierQueue(Store(path), layered=False, revisits=True)
    entries = _entries(due + waiting, hosts, run=20)
    later, soon = time.time() + 3600, time.time() + 3.0
    for i in range(0, len(entries), 5000):
        queue.push([dataclasses.replace(e, visit=2, not_before=soon if e.fingerprint < due
                                        else later) for e in entries[i:i + 5000]])
    # The fill's million entries go: a DB worker holds none, and Python's cyclic GC walks
    # every live object (with them alive, the cut cost 1.6x for the GC alone).
    del entries
    gc.collect()
    time.sleep(max(0.0, soon - time.time()) + 0.1)
    slots: HostSlots = HostSlots(0.0)
    in_flight: deque[tuple[int, list[Entry]]] = deque()
    cpu = 0.0
    taken = cuts = 0
    while taken < due or in_flight:
        spent, got = cut_once(queue, slots, in_flight, promote=True)
        cpu += spent
        cuts += 1
        taken += len(got)
    left = queue.not_due
    queue.store.close()
    return {"due": due, "waiting": waiting, "taken": taken, "cuts": cuts, "left_waiting": left,
            "us_per_url": 1e6 * cpu / max(1, taken)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=2_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "due-cut.json"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    for name, waiting in (("alone", 0), ("waiting", args.waiting)):
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = drain(tmp, args.due, waiting, args.hosts)
        print(f"{name:>8}: {result[name]}", flush=True)
    result["ratio"] = result["waiting"]["us_per_url"] / result["alone"]["us_per_url"]
    print(f"µs per URL cut with {args.waiting} URLs not due / without: {result['ratio']:.2f}")
    save(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
