"""Checkpoints of a store, without Ray: incremental uploads, restore, garbage collection and
the rollback a restarted worker follows; on a local folder and on S3 (moto's server)."""

import json
import os
import shutil
import time

import pytest

from raycrawl.errors import CrawlStateError
from raycrawl.storage import checkpoints
from raycrawl.storage.checkpoints import Rollback, StoreCheckpoints
from raycrawl.storage.identity import claim_store, prepare_store, store_path
from raycrawl.storage.location import Location
from raycrawl.storage.store import Store


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return f"s3://{request.getfixturevalue('s3').bucket()}/crawl"


def fill(store, start, n):
    wb = store.batch()
    for i in range(start, start + n):
        wb.put(b"s" + i.to_bytes(4, "big"), b"v" * 200)
    store.write(wb)


def keys(path):
    db = Store(path)
    try:
        return sum(1 for _ in db.scan(b"s", b"t"))
    finally:
        db.close()


def checkpoint(cps, epoch, lineage, stores=("db-worker-0",)):
    cps.create(epoch)
    sizes = cps.upload(epoch, lineage)
    checkpoints.publish(cps_out(cps), epoch, {"stores": list(stores), "assignment": {}})
    return sizes


def cps_out(cps):
    return cps.remote.uri.rsplit("/_checkpoints/", 1)[0]


def sst_objects(out, store="db-worker-0"):
    return checkpoints.checkpoints_of(out).child(store).child("sst").names()


def test_only_new_table_files_are_uploaded_and_a_restore_is_the_store_at_its_epoch(
        tmp_path, out):
    state = str(tmp_path / "state")
    path = store_path(state, "db-worker-0")
    store = Store(path)
    cps = StoreCheckpoints(store, out, state, "db-worker-0")
    fill(store, 0, 500)
    first = checkpoint(cps, 1, "aaaa")
    assert first["uploaded"] == first["bytes"] > 0
    assert not os.path.exists(os.path.join(state, checkpoints.LOCAL, "db-worker-0"))
    fill(store, 500, 500)
    second = checkpoint(cps, 2, "aaaa")
    # the first epoch's table file is not uploaded again; only the new one and the small files
    assert second["uploaded"] < second["bytes"]
    assert second["bytes"] - second["uploaded"] >= first["bytes"] - 64 * 1024
    assert len(sst_objects(out)) == 2
    fill(store, 1000, 500)  # after the last checkpoint: gone with a restore
    store.close()

    assert checkpoints.restore(out, "db-worker-0", 2, path)
    assert keys(path) == 1000
    assert checkpoints.restore(out, "db-worker-0", 1, path)
    assert keys(path) == 500
    assert not checkpoints.restore(out, "db-worker-9", 1, store_path(state, "db-worker-9"))
    assert os.listdir(store_path(state, "db-worker-9")) == []


def test_a_restored_store_uploads_under_its_own_lineage(tmp_path, out):
    """After a restore the store numbers its files from its epoch on again: a new file may
    take the number of one the lost history uploaded, and must not be taken for it."""
    state = str(tmp_path / "state")
    path = store_path(state, "db-worker-0")
    store = Store(path)
    fill(store, 0, 100)
    checkpoint(StoreCheckpoints(store, out, state, "db-worker-0"), 1, "old1")
    fill(store, 100, 100)
    StoreCheckpoints(store, out, state, "db-worker-0").create(2)  # lost before it published
    StoreCheckpoints(store, out, state, "db-worker-0").upload(2, "old1")
    store.close()
    checkpoints.restore(out, "db-worker-0", 1, path)
    store = Store(path)
    fill(store, 100, 300)  # other keys under what may be the same file numbers
    checkpoint(StoreCheckpoints(store, out, state, "db-worker-0"), 2, "new2")
    store.close()
    shutil.rmtree(path)
    checkpoints.restore(out, "db-worker-0", 2, path)
    assert keys(path) == 400


def test_old_epochs_and_the_files_only_they_use_are_collected(tmp_path, out):
    state = str(tmp_path / "state")
    path = store_path(state, "db-worker-0")
    store = Store(path)
    cps = StoreCheckpoints(store, out, state, "db-worker-0")
    for epoch in range(1, 6):
        fill(store, epoch * 1000, 300)
        store.db.compact_range(None, None)  # the older tables merged into a new one
        checkpoint(cps, epoch, "aaaa")
        checkpoints.collect(out)
    store.close()
    assert checkpoints.published(out) == [4, 5]
    folder = checkpoints.checkpoints_of(out).child("db-worker-0")
    assert [n for n in folder.names() if n.endswith(".json")] == ["00000004.json",
                                                                   "00000005.json"]
    used = {key for e in (4, 5) for key in json.loads(
        folder.read(f"0000000{e}.json"))["files"].values() if key.startswith("sst/")}
    assert {f"sst/{n}" for n in sst_objects(out)} == used
    for epoch, expected in ((4, 1200), (5, 1500)):
        checkpoints.restore(out, "db-worker-0", epoch, path)
        assert keys(path) == expected


def test_a_retired_workers_checkpoints_are_collected_once_no_kept_epoch_uses_them(
        tmp_path, out):
    """Three workers checkpoint, then a rescale retires one (epochs 3 on name two stores):
    its folder goes once the last epoch that had it is older than the kept ones; the
    others keep what their kept epochs use, and no emptied epoch folder is left behind."""
    state = str(tmp_path / "state")
    names = ["db-worker-0", "db-worker-1", "strategy-worker-0"]
    stores = {n: Store(store_path(state, n)) for n in names}
    cps = {n: StoreCheckpoints(stores[n], out, state, n) for n in names}
    root = checkpoints.checkpoints_of(out)
    for epoch in range(1, 6):
        alive = names if epoch < 3 else ["db-worker-0", "strategy-worker-0"]
        for n in alive:
            fill(stores[n], epoch * 1000, 200)
            stores[n].db.compact_range(None, None)
            cps[n].create(epoch)
            cps[n].upload(epoch, "aaaa")
        checkpoints.publish(out, epoch, {"stores": alive, "assignment": {}})
        checkpoints.collect(out)
        assert ("db-worker-1" in root.folders()) is (epoch < 4)  # epoch 2 kept until 4
    assert root.folders() == ["db-worker-0", "strategy-worker-0"]
    for n in ("db-worker-0", "strategy-worker-0"):
        folder = root.child(n)
        assert folder.names() == ["00000004.json", "00000005.json"]
        assert folder.folders() == ["00000004", "00000005", "sst"]  # no emptied one left
    for store in stores.values():
        store.close()
    path = store_path(state, "db-worker-0")
    shutil.rmtree(path)
    checkpoints.restore(out, "db-worker-0", 5, path)
    assert keys(path) == 1000


def test_a_worker_restarted_after_a_rollback_restores_its_store_once(tmp_path, out):
    state = str(tmp_path / "state")
    path = store_path(state, "strategy-worker-1")
    prepare = lambda: prepare_store(state, out, True, "strategy-worker-1",  # noqa: E731
                                    "c/strategy-worker-1", "n1")
    assert prepare() == 0
    store = Store(path)
    stamp = claim_store(store, out, "c", "strategy-worker-1", "c/strategy-worker-1", "n1")
    fill(store, 0, 100)
    checkpoint(StoreCheckpoints(store, out, state, "strategy-worker-1"), 1, stamp.lineage,
               ["strategy-worker-1"])
    fill(store, 100, 100)
    store.close()
    shutil.rmtree(path)  # its disk lost: a one-line reason until the crawl rolls back
    with pytest.raises(CrawlStateError, match="its store .* is gone"):
        prepare()
    written = time.time()
    checkpoints.write_rollback(out, Rollback(1, 1))
    assert checkpoints.read_rollback(out).at >= written  # when (tests bound repeats by it)
    assert prepare() == 1
    store = Store(path)
    again = claim_store(store, out, "c", "strategy-worker-1", "c/strategy-worker-1", "n2")
    assert again.rollback == 1 and again.lineage != stamp.lineage
    assert sum(1 for _ in store.scan(b"s", b"t")) == 100
    fill(store, 100, 50)  # work after the rollback: a later restart keeps it
    store.close()
    assert prepare() == 1
    assert keys(path) == 150
    shutil.rmtree(path)  # lost again: not restored alone from rollback 1's (older) checkpoint
    with pytest.raises(CrawlStateError, match="its store .* is gone"):
        prepare()  # (the crawl goes back as a whole again: rollback 2)
    checkpoints.write_rollback(out, Rollback(2, 1))
    assert prepare() == 2
    assert keys(path) == 100
    assert prepare() == 2 and keys(path) == 100  # once


def test_without_checkpoints_a_rollback_record_is_not_read(tmp_path):
    state, out = str(tmp_path / "state"), str(tmp_path / "out")
    checkpoints.write_rollback(out, Rollback(1, 1))
    assert prepare_store(state, out, False, "db-worker-0", "c/db-worker-0", "n1") == 0
    assert Location.of(out).child(checkpoints.CHECKPOINTS).exists(checkpoints.ROLLBACK)


def test_status_shows_the_last_checkpoint_and_the_rollbacks():
    from raycrawl.coordinator.reports import CrawlStatus
    from raycrawl.display import checkpoint_text
    assert checkpoint_text(CrawlStatus()) == ""
    text = checkpoint_text(CrawlStatus(checkpoint=7, checkpoint_at=3600.0,
                                       checkpoint_bytes=41_200_000, checkpoint_uploaded=1_300_000,
                                       rollbacks=2))
    assert text == "7 at 01:00:00 UTC, 41.2 MB (1.3 MB uploaded); rolled back 2 times"


def test_a_closed_gate_lets_those_passing_end_and_holds_the_next_until_it_opens():
    import asyncio

    from actors.gate import Gate

    async def scenario():
        gate, events = Gate(), []
        release = asyncio.Event()

        async def hand_over(name, wait=None):
            async with gate.passing():
                events.append(f"{name} in")
                if wait is not None:
                    await wait.wait()
                events.append(f"{name} out")

        first = asyncio.create_task(hand_over("a", release))
        await asyncio.sleep(0)
        closing = asyncio.create_task(gate.close())
        await asyncio.sleep(0.01)
        assert not closing.done()  # a is still passing
        second = asyncio.create_task(hand_over("b"))
        release.set()
        await closing
        assert events == ["a in", "a out"]  # b waits while closed
        gate.open()
        await gate.close()  # closed again before b ran: b still waits
        await asyncio.sleep(0.01)
        assert events == ["a in", "a out"]
        gate.open()
        await asyncio.gather(first, second)
        assert events == ["a in", "a out", "b in", "b out"]

    asyncio.run(scenario())
