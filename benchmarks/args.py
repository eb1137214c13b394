"""The command line every peer runner (``bare``, ``scrapy_run``) takes."""

from __future__ import annotations

import argparse


def runner_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every peer runner takes: the seed, the output folder, the limits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("seed")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--per-host", type=int, default=4)
    return parser.parse_args(argv)
