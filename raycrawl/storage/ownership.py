"""Which crawl owns an output folder and a state folder, and whether a driver may take them.

- ``OUT/.raycrawl.json`` names the crawl whose pages are in ``OUT`` (and its state folder): a
  second crawl with the same ``--out`` and another crawl id is refused before anything is
  written or deleted.
- ``STATE/manifest.json`` names the crawl of a state folder: a new crawl there is refused
  (``raycrawl resume`` continues the one it holds).
- ``STATE/owner.json`` is the running generation's lease: its coordinator rewrites it every
  few seconds with the Ray cluster it runs on.  A coordinator of another generation (a second
  driver, from this cluster or another one) refuses to start while that lease is fresh.
- Workers check that they see the manifest the coordinator wrote: a worker on a node whose
  ``--state`` is not the shared folder fails at once instead of working on an empty store.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from raycrawl.errors import CrawlStateError
from raycrawl.storage.location import Location
from raycrawl.storage.statefiles import (
    MANIFEST,
    OUT_COPY,
    put_json,
    read_json_if_present,
    write_json,
)

OUT_MARKER = ".raycrawl.json"
OWNER = "owner.json"
LEASE_S = 15.0  # a lease not renewed for this long is stale: its coordinator is gone
RENEW_S = 3.0  # how often a running coordinator renews it


def claim_out(out: str, crawl_id: str, state_dir: str) -> None:
    """Mark ``out`` (a folder or a URI) as this crawl's output; :class:`CrawlStateError` if
    another crawl's pages are there, :class:`StorageError` if it cannot be written."""
    loc = Location.of(out)
    loc.makedirs()
    raw = loc.read(OUT_MARKER)
    try:
        marker = json.loads(raw) if raw is not None else None
    except ValueError as exc:
        raise CrawlStateError(f"cannot read {loc}/{OUT_MARKER}: {exc}") from None
    if marker is not None and marker.get("crawl_id") != crawl_id and (
            os.path.exists(os.path.join(str(marker.get("state")), MANIFEST))
            or loc.child(OUT_COPY).exists(MANIFEST)):  # that crawl did start
        raise CrawlStateError(
            f"{out} holds the pages of crawl {marker.get('crawl_id')} (state in "
            f"{marker.get('state')}): use another --out, or `raycrawl resume --state "
            f"{marker.get('state')}`")
    if marker is None or marker.get("crawl_id") != crawl_id:
        put_json(loc, OUT_MARKER, {"crawl_id": crawl_id, "state": state_dir})


def check_new_state(state_dir: str, crawl_id: str) -> None:
    """A new crawl may not start in a state folder that holds a crawl."""
    manifest = read_json_if_present(state_dir, MANIFEST)
    if manifest is not None:
        raise CrawlStateError(
            f"{state_dir} already holds crawl {manifest.get('crawl_id')}: continue it with "
            f"`raycrawl resume --state {state_dir}`, or use another --state"
            if manifest.get("crawl_id") != crawl_id else
            f"crawl {crawl_id} already exists in {state_dir}: continue it with "
            f"`raycrawl resume --state {state_dir}`")


def take_lease(state_dir: str, crawl_id: str, generation: int, cluster: str,
               clock: Any = time.time, sleep: Any = time.sleep,
               holder_gone_on: str | None = None) -> None:
    """Take (or renew) the state folder's lease for this generation of ``crawl_id`` on Ray
    cluster ``cluster`` (its GCS address).

    A lease another generation renewed less than ``LEASE_S`` ago is watched (up to
    ``LEASE_S``): renewed again, its coordinator is alive and :class:`CrawlStateError` is
    raised; not renewed, it is gone (killed with its cluster) and the lease is taken over.
    ``holder_gone_on`` names a cluster on which the caller saw the crawl's coordinator gone:
    a lease held there is taken over at once."""
    ours = (crawl_id, generation, cluster)
    os.makedirs(state_dir, exist_ok=True)
    lease = read_json_if_present(state_dir, OWNER)
    first_seen = lease.get("renewed_at") if lease is not None else None
    while lease is not None and (lease.get("crawl_id"), lease.get("generation"),
                                 lease.get("cluster")) != ours:
        if holder_gone_on is not None and lease.get("cluster") == holder_gone_on:
            break
        renewed_at = float(lease.get("renewed_at", 0))
        if clock() - renewed_at >= LEASE_S:
            break  # stale: its coordinator is gone
        if lease.get("renewed_at") != first_seen:
            raise CrawlStateError(
                f"{state_dir} is in use by crawl {lease.get('crawl_id')} generation "
                f"{lease.get('generation')} on Ray cluster {lease.get('cluster')}")
        sleep(RENEW_S / 2)
        lease = read_json_if_present(state_dir, OWNER)
    renew_lease(state_dir, crawl_id, generation, cluster, clock())


def renew_lease(state_dir: str, crawl_id: str, generation: int, cluster: str,
                now: float) -> None:
    write_json(state_dir, OWNER, {"crawl_id": crawl_id, "generation": generation,
                                  "cluster": cluster, "renewed_at": now})


def release_lease(state_dir: str, crawl_id: str, generation: int, cluster: str) -> None:
    """An ended generation lets the next one start at once."""
    renew_lease(state_dir, crawl_id, generation, cluster, 0.0)
