"""What one actor call costs, by the size of its argument: inline in the call, or through the
object store past Ray's ``max_direct_call_object_size``.

A caller actor awaits ``--calls`` calls of a callee actor, one at a time, with an argument of
each size; prints the CPU each process spent a call (all its threads: Ray's own included) and
the wall time a call.  Run it with and without the variable to compare::

    .venv/bin/python -m benchmarks.call_cost
    RAY_max_direct_call_object_size=262144 .venv/bin/python -m benchmarks.call_cost
"""

from __future__ import annotations

import argparse
import os
import time

import ray

from benchmarks.measure import own_cpu_s

SIZES = (1_000, 50_000, 90_000, 110_000, 200_000, 1_000_000)


@ray.remote(num_cpus=0)
class Callee:
    def cpu(self) -> float:
        return own_cpu_s()

    async def take(self, data: bytes) -> int:
        return len(data)


@ray.remote(num_cpus=0)
class Caller:
    def __init__(self, callee: object) -> None:
        self.callee = callee

    async def run(self, size: int, calls: int) -> tuple[float, float]:
        """CPU seconds of this process and wall seconds, for ``calls`` calls."""
        data = b"x" * size
        await self.callee.take.remote(data)  # type: ignore[attr-defined]
        cpu, wall = own_cpu_s(), time.perf_counter()
        for _ in range(calls):
            await self.callee.take.remote(data)  # type: ignore[attr-defined]
        return own_cpu_s() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        callee = Callee.remote()  # type: ignore[attr-defined]
        caller = Caller.remote(callee)  # type: ignore[attr-defined]
        print(f"max_direct_call_object_size: "
              f"{os.environ.get('RAY_max_direct_call_object_size', 'Ray default')}")
        for size in SIZES:
            before = ray.get(callee.cpu.remote())
            cpu, wall = ray.get(caller.run.remote(size, args.calls))
            callee_cpu = ray.get(callee.cpu.remote()) - before
            print(f"{size:>9} B: caller {1e6 * cpu / args.calls:6.0f} us CPU, callee "
                  f"{1e6 * callee_cpu / args.calls:6.0f} us CPU, {1e6 * wall / args.calls:6.0f}"
                  f" us a call")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
