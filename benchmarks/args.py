"""The command line every peer runner (``bare``, ``scrapy_run``) takes."""

from __future__ import annotations

import argparse

# What every crawler is given (``run.Setup`` takes these too): requests in flight, per host.
CONCURRENCY = 128
PER_HOST = 4


def runner_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every peer runner takes: the seed, the output folder, the limits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("seed")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--per-host", type=int, default=PER_HOST)
    return parser.parse_args(argv)
