"""The stateless fetch task: a spider-feed batch in; the spider log (pages, links) and the
robots.txt fetches it made out."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import ray

from raycrawl.fetching import FetchOptions, fetch_feed

from .options import FETCH_TASK_OPTIONS


@ray.remote(**FETCH_TASK_OPTIONS)
def fetch_batch(feed: pa.RecordBatch, options: FetchOptions) -> tuple[
        pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    return asyncio.run(fetch_feed(feed, options))
