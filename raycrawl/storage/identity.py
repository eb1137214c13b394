"""A worker's store is never silently created empty where one existed.

RocksDB creates a store where it finds none, so a store deleted under a running crawl (a lost
disk, a cleaned folder) would come back empty when its worker restarts: its URLs queued in no
queue, its seen URLs fetched again, and the crawl would "finish" without them.  So:

- Each store carries its **identity** (crawl, worker) under a key of its own, written when it
  is created, and a worker refuses a store of another crawl or worker.
- A store's creation is **recorded outside it**, in ``OUT/_crawl/stores/<worker>.json`` (the
  identity, the node, when): not on the store's disk, which may be lost with it.  A worker
  that finds that record but no store stops with a one-line reason naming itself, its node
  and the store.  The coordinator then rolls the crawl back
  to its last checkpoint (``raycrawl.storage.checkpoints``) if it has one, and fails visibly
  instead of losing URLs if not.
- A worker restarted after such a rollback replaces its store by its checkpoint's copy before
  it opens it (:func:`prepare_store`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from raycrawl.errors import CrawlStateError
from raycrawl.storage.checkpoints import Stamp, read_rollback, read_stamp, restore, write_stamp
from raycrawl.storage.location import Location
from raycrawl.storage.statefiles import OUT_COPY, put_json
from raycrawl.storage.store import Store

STORES = "stores"
log = logging.getLogger(__name__)
IDENTITY_KEY = b"\x00identity"  # -> JSON {"crawl_id", "store"}; sorts before every table


def store_path(state_dir: str, store: str) -> str:
    """Where worker ``store`` (``db-worker-0``, ``strategy-worker-1``) keeps its store."""
    return os.path.join(state_dir, store)


def prepare_store(state_dir: str, out: str, checkpoints: bool, store: str, who: str,
                  node: str) -> int:
    """Before a worker opens its store: restore it from its checkpoint if the crawl was rolled
    back since this worker last did (``checkpoints``: the crawl keeps them), else
    :class:`CrawlStateError` (one line) when the store was created once and is gone now.
    Returns the rollback the crawl is at (0: none).

    Which rollback a worker last restored for is kept in its record in OUT, not only in the
    store's folder: a store lost again after its rollback must not be restored alone from
    that rollback's (older) checkpoint while the other stores went on — the crawl goes back
    as a whole again instead."""
    path = store_path(state_dir, store)
    present = os.path.exists(os.path.join(path, "CURRENT"))
    target = read_rollback(out) if checkpoints else None
    record = _read_record(out, store)
    if target is not None and target.generation > int((record or {}).get("rollback", 0)):
        found = restore(out, store, target.epoch, path)
        write_stamp(path, target.generation)
        if record is not None:  # (a new worker's is written when it claims its store)
            _write_record(out, store, {**record, "node": node, "rollback": target.generation})
        log.warning("%s: store %s %s (rollback %d)", who, path,
                    f"restored from checkpoint {target.epoch}" if found else
                    f"started empty: checkpoint {target.epoch} has none of it",
                    target.generation)
        return target.generation
    if present or record is None:
        return target.generation if target else 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.get("created_at", 0)))
    raise CrawlStateError(
        f"{who} on node {node}: its store {path} is gone (created {created} UTC on node "
        f"{record.get('node')}); with no checkpoint to restore it from, the crawl stops "
        f"instead of going on without its URLs")


def claim_store(db: Store, out: str, crawl_id: str, store: str, who: str,
                node: str, rollback: int = 0) -> Stamp:
    """After a worker opened its store: mark a new store with its identity and record its
    creation; :class:`CrawlStateError` (one line) for a store of another crawl or worker.
    Returns the store's stamp (a new store's is made, at ``rollback``)."""
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
    if _read_record(out, store) is None:
        _write_record(out, store, {**identity, "node": node, "created_at": time.time(),
                                   "rollback": rollback})
    return read_stamp(db.path) or write_stamp(db.path, rollback)


def _records(out: str) -> Location:
    return Location.of(out).child(OUT_COPY).child(STORES)


def _write_record(out: str, store: str, record: dict[str, Any]) -> None:
    put_json(_records(out), f"{store}.json", record)


def _read_record(out: str, store: str) -> dict[str, Any] | None:
    raw = _records(out).read(f"{store}.json")
    return None if raw is None else dict(json.loads(raw))
