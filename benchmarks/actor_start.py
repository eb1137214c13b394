"""What an actor process costs to start, with and without a job's ``runtime_env``.

A local Ray of 2 CPUs is started once per variant, in a process of its own, and
``--actors`` empty actors are created one after another; each reports its own process's CPU
time once it answers (Python, ``import ray``, the worker's set-up).  The two variants:

- ``plain``: ``ray.init`` with no runtime environment (the test session's settings come from
  the environment the Ray starts with);
- ``env_vars``: ``ray.init(runtime_env={"env_vars": {...}})``, as the test session did until
  stop 35; Ray starts each worker of such a job through a second Python that imports Ray
  first (its ``setup_worker``).

Rounds alternate the variants (``--rounds``); it prints the median CPU and wait per actor of
each and writes ``results/actor-start.json``::

    .venv/bin/python -m benchmarks.actor_start --actors 6 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.queue_cut import save

VARIANTS = ("plain", "env_vars")


def _one(variant: str, actors: int) -> list[tuple[float, float]]:
    """(CPU s of the actor's process, s until it answered), per actor, in a fresh Ray."""
    import time

    import psutil
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    runtime_env = {"env_vars": {"RAYCRAWL_BENCH": "1"}} if variant == "env_vars" else None
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env=runtime_env)

    @ray.remote(num_cpus=0)
    class Empty:
        def cpu_s(self) -> float:
            t = psutil.Process().cpu_times()
            return float(t.user + t.system)

    ray.get(Empty.remote().cpu_s.remote())  # the first worker of the job: not counted
    out = []
    for _ in range(actors):
        started = time.monotonic()
        actor = Empty.remote()
        cpu_s = ray.get(actor.cpu_s.remote())
        out.append((cpu_s, time.monotonic() - started))
        ray.kill(actor)
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # (a child)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "actor-start.json"))
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(_one(args.variant, args.actors)))
        return 0
    samples: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            run = subprocess.run([sys.executable, "-m", "benchmarks.actor_start", "--variant",
                                  variant, "--actors", str(args.actors)],
                                 capture_output=True, text=True, check=True)
            samples[variant] += json.loads(run.stdout.strip().splitlines()[-1])
    result: dict[str, Any] = {"actors": args.actors, "rounds": args.rounds}
    for variant, rows in samples.items():
        cpu = statistics.median(r[0] for r in rows)
        wait = statistics.median(r[1] for r in rows)
        result[variant] = {"cpu_s": [r[0] for r in rows], "wait_s": [r[1] for r in rows],
                           "median_cpu_s": cpu, "median_wait_s": wait}
        print(f"{variant:>9}: an actor's process {cpu:.2f} s of CPU, answered in {wait:.2f} s "
              f"(medians of {len(rows)})", flush=True)
    save(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
