"""A worker's store is never silently created empty where one existed.

RocksDB creates a store where it finds none, so a store deleted under a running crawl (a lost
disk, a cleaned folder) would come back empty when its worker restarts: its URLs queued in no
queue, its seen URLs fetched again, and the crawl would "finish" without them.  So:

- Each store carries its **identity** (crawl, worker) under a key of its own, written when it
  is created, and a worker refuses a store of another crawl or worker.
- A store's creation is **recorded outside it**, in ``STATE/stores/<worker>.json`` (the
  identity, the node, when).  A worker that finds that record but no store stops with a one-line
  reason naming itself, its node and the store: the crawl fails visibly instead of losing
  URLs.  (Restoring such a store from a checkpoint on object storage is not built yet.)
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from raycrawl.errors import CrawlStateError
from raycrawl.storage.statefiles import read_json_if_present, write_json
from raycrawl.storage.store import Store

STORES = "stores"
IDENTITY_KEY = b"\x00identity"  # -> JSON {"crawl_id", "store"}; sorts before every table


def store_path(state_dir: str, store: str) -> str:
    """Where worker ``store`` (``db-worker-0``, ``strategy-worker-1``) keeps its store."""
    return os.path.join(state_dir, store)


def check_store_present(state_dir: str, store: str, who: str, node: str) -> None:
    """Before a worker opens its store: :class:`CrawlStateError` (one line) when the store was
    created once and is gone now."""
    record = read_json_if_present(os.path.join(state_dir, STORES), f"{store}.json")
    if record is None or os.path.exists(os.path.join(store_path(state_dir, store), "CURRENT")):
        return
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.get("created_at", 0)))
    raise CrawlStateError(
        f"{who} on node {node}: its store {store_path(state_dir, store)} is gone (created "
        f"{created} UTC on node {record.get('node')}); with no checkpoint to restore it from, "
        f"the crawl stops instead of going on without its URLs")


def claim_store(db: Store, state_dir: str, crawl_id: str, store: str, who: str,
                node: str) -> None:
    """After a worker opened its store: mark a new store with its identity and record its
    creation; :class:`CrawlStateError` (one line) for a store of another crawl or worker."""
    identity = {"crawl_id": crawl_id, "store": store}
    raw = db.get(IDENTITY_KEY)
    if raw is not None:
        found: dict[str, Any] = json.loads(raw)
        if found != identity:
            raise CrawlStateError(
                f"{who} on node {node}: {db.path} holds the store of {found.get('store')} of "
                f"crawl {found.get('crawl_id')}, not its own: refusing to use it")
    else:
        wb = db.batch()
        wb.put(IDENTITY_KEY, json.dumps(identity).encode())
        db.write(wb)
    records = os.path.join(state_dir, STORES)
    if read_json_if_present(records, f"{store}.json") is None:
        os.makedirs(records, exist_ok=True)
        write_json(records, f"{store}.json",
                   {**identity, "node": node, "created_at": time.time()})
