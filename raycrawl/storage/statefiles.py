"""The small JSON files of a crawl's state folder, written atomically, read in one place.

``manifest.json`` (config, partitions, generation), ``coordinator.json`` (the coordinator's
phase, so a restarted coordinator adopts the crawl) and ``status.json`` (the last status
snapshot, for ``raycrawl status``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from raycrawl.errors import CrawlStateError, StorageError
from raycrawl.storage.location import Location, replacing

MANIFEST = "manifest.json"
COORDINATOR = "coordinator.json"
STATUS = "status.json"


def write_json(state_dir: str, name: str, data: dict[str, Any]) -> None:
    """Replace ``state_dir/name`` atomically and durably (a temporary name of its own per
    writer, so two writers never clobber each other's half-written file); the file is left
    as it was and :class:`StorageError` raised when it cannot be written."""
    with replacing(state_dir, name, f"state file {os.path.join(state_dir, name)}") as fh:
        fh.write(json.dumps(data, indent=1, default=str).encode())


def read_json(state_dir: str, name: str) -> dict[str, Any]:
    """``state_dir/name``; :class:`CrawlStateError` when it is missing or unreadable."""
    path = os.path.join(state_dir, name)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise CrawlStateError(f"no crawl state in {state_dir} ({name} missing)") from None
    except (OSError, ValueError) as exc:
        raise CrawlStateError(f"cannot read {path}: {exc}") from None


def read_json_if_present(folder: str, name: str) -> dict[str, Any] | None:
    """``folder/name``, or None when it does not exist; :class:`CrawlStateError` when it
    exists and cannot be read."""
    if not os.path.exists(os.path.join(folder, name)):
        return None
    return read_json(folder, name)


# The coordinator keeps a copy of these in OUT (``OUT/_crawl/``), so that ``raycrawl status
# --out``, ``resume --out`` and ``Crawl.attach(OUT)`` work from any machine, whatever the state
# folder (node-local, or on the coordinator's node only).  Not when the state folder is
# ``OUT/state`` already.  The ``_`` keeps it out of the datasets' way.
OUT_COPY = "_crawl"
OUT_COPIED = (MANIFEST, COORDINATOR, STATUS)


def out_copy(out: str, state_dir: str) -> Location | None:
    """Where the coordinator copies the crawl's state files in ``out`` (None: they are there
    already, in ``OUT/state``)."""
    loc = Location.of(out)
    if loc.local and os.path.abspath(state_dir) == os.path.join(loc.root, "state"):
        return None
    return loc.child(OUT_COPY)


def put_json(where: Location, name: str, data: dict[str, Any]) -> None:
    """Replace ``where/name`` whole (:class:`StorageError` when it cannot be written)."""
    where.put(name, json.dumps(data, indent=1, default=str).encode())


def read_out_json(out: str, name: str) -> dict[str, Any]:
    """State file ``name`` of the crawl whose output is ``out`` (a folder or a URI): its copy
    in ``OUT/_crawl``, else ``OUT/state/name``; :class:`CrawlStateError` when neither is
    there or it cannot be read."""
    loc = Location.of(out)
    for where in (loc.child(OUT_COPY), loc.child("state")):
        try:
            raw = where.read(name)
        except StorageError as exc:
            raise CrawlStateError(str(exc)) from None
        if raw is not None:
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise CrawlStateError(f"cannot read {where}/{name}: {exc}") from None
    raise CrawlStateError(f"no crawl in {loc} ({OUT_COPY}/{name} missing)")
