"""Checkpoints of the workers' stores in ``OUT/_checkpoints``, incremental, and the crawl's
rollback to one.

**What a checkpoint is.**  Every ``checkpoint_every_s`` the coordinator cuts one *epoch* of the
whole crawl: the DB workers hold their hand-overs (a strategy worker's call and the enqueue it
makes are then nowhere under way, ``actors.db_worker``), every DB and strategy worker makes a
RocksDB checkpoint of its store (hard links, beside the store: ``STATE/checkpoints/``), and the
hand-overs go on.  The stores' states are then one consistent cut of the crawl, as if it had
been stopped there.  Each worker then uploads, off its event loop, the files of its checkpoint
that are not in ``OUT`` yet — RocksDB never changes a table file (``*.sst``) once written, so
only the new ones are uploaded — and a small manifest; once every worker's is there the
coordinator *publishes* the epoch (``epoch-NNNNNNNN.json``, with the assignment of the
partitions) and deletes what only older epochs than the last :data:`KEEP` use.

**Layout** under ``OUT/_checkpoints``::

    epoch-00000007.json             published: the epoch's stores, assignment, sizes
    rollback.json                   the rollback the crawl is at (see below)
    db-worker-0/00000007.json       the worker's manifest: its files -> their objects
    db-worker-0/00000007/CURRENT    the files that change (MANIFEST, OPTIONS, WAL, CURRENT)
    db-worker-0/sst/<lineage>-000123.sst

A table file's number is unique within one store's history only: a store restored from an
epoch numbers its new files from that epoch on, so it may write another ``000123.sst``.  Each
history has its own *lineage* (a random id, new at every creation and restore, kept in the
store's folder with its :class:`Stamp`), and the objects are named by both.

**Rollback.**  When a store is lost (its disk, its node), the crawl goes back to its last
published epoch as a whole — every worker's store, not only the lost one, since the others
moved on with the lost one's work — and does the work since again.  The coordinator writes
``rollback.json`` (the rollback's number and its epoch) and restarts every worker; a worker
whose store's stamp is older than that rollback replaces its store by its epoch's copy before
it opens it (:func:`prepare_store`).  The output written since the epoch is not recorded in
the restored DB workers' stores, so they delete it and write it again
(``raycrawl.output.durable``): still one row per fetch.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

from rocksdict import Checkpoint

from raycrawl.errors import StorageError
from raycrawl.storage.location import Location
from raycrawl.storage.statefiles import put_json
from raycrawl.storage.store import Store, fsync_dir

CHECKPOINTS = "_checkpoints"
ROLLBACK = "rollback.json"
STAMP = "raycrawl-stamp.json"  # in a store's folder, beside RocksDB's files
LOCAL = "checkpoints"  # STATE/checkpoints/<store>/<epoch>: a checkpoint before its upload
KEEP = 2  # published epochs kept (the last one, and the one before while it is replaced)
MAX_ROLLBACKS = 3  # rollbacks to one epoch before the crawl stops (its restore keeps failing)
_EPOCH = re.compile(r"^epoch-(\d{8})\.json$")


def checkpoints_of(out: str) -> Location:
    return Location.of(out).child(CHECKPOINTS)


def _epoch_name(epoch: int) -> str:
    return f"{epoch:08d}"


# -- what the coordinator publishes -------------------------------------------------------


def published(out: str) -> list[int]:
    """The epochs published in ``out``, oldest first."""
    return [int(m.group(1)) for n in checkpoints_of(out).names() if (m := _EPOCH.match(n))]


def read_epoch(out: str, epoch: int) -> dict[str, Any]:
    raw = checkpoints_of(out).read(f"epoch-{_epoch_name(epoch)}.json")
    if raw is None:
        raise StorageError(f"checkpoint {epoch} of {out} is gone")
    return dict(json.loads(raw))


def publish(out: str, epoch: int, data: dict[str, Any]) -> None:
    """Record epoch ``epoch`` whole (every store's manifest is uploaded before)."""
    put_json(checkpoints_of(out), f"epoch-{_epoch_name(epoch)}.json", {"epoch": epoch, **data})


def collect(out: str) -> int:
    """Delete the epochs older than the last :data:`KEEP` published, and the files only they
    used, in every store's folder: the folder of a worker a rescale retired is emptied and
    removed once no kept epoch uses it.  Returns how many files were deleted."""
    root = checkpoints_of(out)
    epochs = published(out)
    keep = {_epoch_name(e) for e in epochs[-KEEP:]}
    deleted = 0
    for epoch in epochs[:-KEEP]:
        root.delete(f"epoch-{_epoch_name(epoch)}.json")
        deleted += 1
    for store in root.folders():
        gone, left = _collect_store(root.child(store), keep, epochs[-1] if epochs else None)
        deleted += gone
        if not left:
            root.delete_folder(store)
    return deleted


def _collect_store(folder: Location, keep: set[str], last: int | None) -> tuple[int, int]:
    """Delete a store's manifests (and their small files) that no kept epoch is, and the
    table files no manifest left uses; one newer than ``last`` (the last epoch published:
    its upload is under way) stays.  Returns (files deleted, files left in the folder and
    its ``sst``)."""
    deleted = left = 0
    used: set[str] = set()
    for name in folder.names():
        number, _, ext = name.partition(".")
        if ext != "json" or not number.isdigit():
            left += 1
        elif number in keep or last is None or int(number) > last:
            # kept, or newer than every published epoch (being uploaded now): it stays
            used.update(json.loads(folder.read(name) or b"{}").get("files", {}).values())
            left += 1
        else:  # older than the kept ones, or never published (its upload failed)
            deleted += len(folder.child(number).names()) + 1
            folder.delete_folder(number)
            folder.delete(name)
    sst = folder.child("sst")
    for name in sst.names():
        if f"sst/{name}" in used:
            left += 1
        else:
            sst.delete(name)
            deleted += 1
    return deleted, left


@dataclass(frozen=True, slots=True)
class Rollback:
    """The crawl's rollbacks so far (``generation``) and the epoch the last went back to, how
    many rollbacks in a row went back to that epoch, why, how many URLs the crawl had
    fetched at that epoch, and when it was written (wall clock; set by
    :func:`write_rollback`)."""

    generation: int
    epoch: int
    tries: int = 1
    reason: str = ""
    fetched: int = 0
    at: float = 0.0


def read_rollback(out: str) -> Rollback | None:
    raw = checkpoints_of(out).read(ROLLBACK)
    if raw is None:
        return None
    data = json.loads(raw)
    return Rollback(int(data["generation"]), int(data["epoch"]), int(data.get("tries", 1)),
                    str(data.get("reason", "")), int(data.get("fetched", 0)),
                    float(data.get("at", 0.0)))


def write_rollback(out: str, rollback: Rollback) -> None:
    put_json(checkpoints_of(out), ROLLBACK, {**asdict(rollback), "at": time.time()})


# -- a store's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """A store's history (``lineage``) and the rollback it is at."""

    lineage: str
    rollback: int = 0


def read_stamp(path: str) -> Stamp | None:
    try:
        with open(os.path.join(path, STAMP), encoding="utf-8") as fh:
            return Stamp(**json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"store {path}: cannot read {STAMP}: {exc}") from None


def write_stamp(path: str, rollback: int) -> Stamp:
    """A new history for the store in ``path``, at rollback ``rollback``."""
    stamp = Stamp(secrets.token_hex(4), rollback)
    tmp = os.path.join(path, f".{STAMP}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(stamp), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(path, STAMP))
    fsync_dir(path)
    return stamp


def restore(out: str, store: str, epoch: int, path: str) -> bool:
    """Replace the store in ``path`` by its copy of epoch ``epoch`` (downloaded beside it, then
    renamed into place); False when that epoch holds no copy of it (the store was created
    after it), and the folder is then left empty."""
    folder = checkpoints_of(out).child(store)
    raw = folder.read(f"{_epoch_name(epoch)}.json")
    files: dict[str, str] = json.loads(raw)["files"] if raw is not None else {}
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    incoming = os.path.join(parent, f".{os.path.basename(path)}.restoring")
    shutil.rmtree(incoming, ignore_errors=True)
    os.makedirs(incoming)
    for name, key in files.items():
        folder.download(key, os.path.join(incoming, name))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(incoming, path)
    fsync_dir(parent)
    return raw is not None


class StoreCheckpoints:
    """One worker's checkpoints: made beside its store, uploaded to ``OUT``."""

    def __init__(self, store: Store, out: str, state_dir: str, name: str) -> None:
        self.store, self.name = store, name
        self.local = os.path.join(state_dir, LOCAL, name)
        self.remote = checkpoints_of(out).child(name)

    def create(self, epoch: int) -> None:
        """A checkpoint of the store as it is now (hard links: fast), for :meth:`upload`;
        one left by an earlier try or a killed worker is removed first."""
        shutil.rmtree(self.local, ignore_errors=True)
        os.makedirs(self.local)
        with self.store.errors(f"checkpoint {epoch}"):
            Checkpoint(self.store.db).create_checkpoint(
                os.path.join(self.local, _epoch_name(epoch)))

    def upload(self, epoch: int, lineage: str) -> dict[str, Any]:
        """Upload the checkpoint's files not uploaded yet, then its manifest; the local
        checkpoint is removed.  Returns its sizes (``bytes``: all its files, ``uploaded``:
        those uploaded now)."""
        folder = os.path.join(self.local, _epoch_name(epoch))
        if not os.path.isdir(folder):
            raise StorageError(f"{self.name}: no checkpoint {epoch} to upload (restarted?)")
        tables = self.remote.child("sst")
        have = set(tables.names())
        files: dict[str, str] = {}
        total = uploaded = 0
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            total += size
            if name.endswith(".sst"):
                key = files[name] = f"sst/{lineage}-{name}"
                if key[4:] in have:
                    continue
                tables.upload(path, key[4:])
            else:
                key = files[name] = f"{_epoch_name(epoch)}/{name}"
                self.remote.child(_epoch_name(epoch)).upload(path, name)
            uploaded += size
        put_json(self.remote, f"{_epoch_name(epoch)}.json",
                 {"epoch": epoch, "lineage": lineage, "files": files, "bytes": total})
        shutil.rmtree(self.local, ignore_errors=True)
        return {"store": self.name, "bytes": total, "uploaded": uploaded}
