"""Partition-owned stores, without Ray: every key of a partition is found by it, a partition's
state copies from one worker's store to another's whole, and the cut merges partitions."""

import gc
import time

import pytest
from rocksdict import Options, Rdict

from raycrawl.config import CrawlConfig
from raycrawl.db_worker.politeness import HostSlots
from raycrawl.db_worker.queue import Entry, FrontierQueue
from raycrawl.db_worker.robots import RobotsPolicy, origin_of
from raycrawl.db_worker.shard import TABLES, DBShard
from raycrawl.errors import ErrorKind, StorageError
from raycrawl.formats.schemas import HostCookies, ScoreUpdate, ended_rows
from raycrawl.storage.store import LAYOUT_KEY, Store
from raycrawl.strategy_worker.runner import STRATEGY_TABLES, StrategyRunner
from raycrawl.urls import url_info
from tests.test_strategy import P as SP
from tests.test_strategy import feed, spider_log

P = 16
WORKER_TABLES = b"clawoij\x00"  # counters, leases, allowance, output, layout: the worker's


def scoring(urls, **kw):
    infos = [url_info(u, P) for u in urls]
    return ScoreUpdate.to_batch([ScoreUpdate(i.url, i.fingerprint, i.host, i.partition, 0, **kw)
                                 for i in infos])


def config(tmp_path, **kw):
    return CrawlConfig(out=str(tmp_path / "out"), partitions=P, delay_s=5.0, cookies=True,
                       recrawl_after_s=3600.0, **kw)


def filled(tmp_path):
    """A DB shard owning every partition, with keys in every partitioned table."""
    shard = DBShard(config(tmp_path), 0)
    hosts = [f"h{i}.test" for i in range(40)]
    shard.enqueue(scoring([f"http://{h}/{n}" for h in hosts for n in range(5)]))
    shard.enqueue(scoring([f"http://{h}/later" for h in hosts], not_before=time.time() + 600))
    # 20 of the 40 hosts, one URL each (at the 5 s delay a host's share of a batch is one: 8 s
    # of requests); the others stay free for the cuts of the tests
    batch_id, cut = shard.cut(20, None)
    assert len({e.host for e in cut}) == 20
    shard.complete(batch_id, ended_rows([(e, ErrorKind.ROBOTS) for e in cut]),
                   entries=cut)
    shard.release_hosts({e.host for e in cut})
    shard.learn_cookies(HostCookies.to_batch([HostCookies(h, b"c") for h in hosts]))
    for h in hosts:
        shard.robots.put(origin_of(f"http://{h}/"), RobotsPolicy.from_fetch(
            404, b"", time.time(), 3600, 2))
    return shard, cut


def keys_by_partition(store, tables):
    """partition -> keys, for every key of a partitioned table; the other keys must be the
    worker's own."""
    found = {}
    for key, value in store.scan(b"", b"\xff"):
        if key[:1] in [bytes([t]) for t in tables]:
            part = int.from_bytes(key[1:3], "big")
            found.setdefault(part, []).append(key)
            if key[:1] in (b"q", b"d"):
                assert Entry.unpack(value).partition == part
        else:
            assert key[:1] in [bytes([t]) for t in WORKER_TABLES] or key == LAYOUT_KEY, key
    return found


def test_every_key_of_a_db_shard_belongs_to_its_partition_or_to_the_worker(tmp_path):
    shard, _ = filled(tmp_path)
    found = keys_by_partition(shard.store, TABLES)
    assert len(found) == P  # 40 hosts over 16 partitions
    tables = {k[:1] for keys in found.values() for k in keys}
    assert tables == {bytes([t]) for t in TABLES} - {b"n"}  # (no strategy reschedule here)
    for part, keys in found.items():
        assert shard.store.count(part) == len(keys)


def test_a_partition_moves_between_db_shards_whole(tmp_path):
    a, cut = filled(tmp_path)
    done = {e.fingerprint for e in cut}
    part = cut[0].partition
    host = cut[0].host
    a.slots.push_back(host, time.monotonic() + 30.0, a.slots.why.get(host) or "politeness")
    before = (a.queue.queued, a.queue.not_due, a.queue.by_part[part], a.queue.not_due_by[part])
    b = DBShard(config(tmp_path), 1, owned=set())
    assert b.queue.queued == 0
    with pytest.raises(ValueError, match="before it was fenced"):
        a.export_partition(part)
    assert a.fence([part]) == 0 and part in a.accepting  # rows queued until it is copied
    batch_id, others = a.cut(1000, None)
    assert others and all(e.partition != part for e in others)  # fenced: never cut
    a.give_back(batch_id, others)
    a.release_hosts({e.host for e in others})
    copy = a.export_partition(part)
    assert part not in a.accepting  # copied: frozen, its rows are sent again
    b.adopt_partition(copy)
    b.adopt_partition(copy)  # a step done again: the same result
    assert b.queue.queued == 0 and part not in b.accepting  # inert until taken
    b.take([part])
    other = next(e.host for e in cut if e.partition != part)
    a.drop_partition(part)
    # its robots.txt policies are forgotten, the other partitions' stay in memory
    assert origin_of(f"http://{host}/") not in a.robots.memory
    assert origin_of(f"http://{other}/") in a.robots.memory
    assert a.store.count(part) == 0 and b.store.count(part) == copy.keys > 0
    assert a.queue.queued + b.queue.queued == before[0]
    assert a.queue.not_due + b.queue.not_due == before[1]
    assert (b.queue.by_part[part], b.queue.not_due_by[part]) == before[2:]
    assert part not in a.owned and part in b.owned
    # the host's politeness moved with it: no request before its wait is over
    assert b.slots.ready_at[host] >= time.monotonic() + 25 and host not in a.slots.ready_at
    # what its URLs were moved too: known (not queued again), done, cookies, robots.txt
    urls = [e.url for e in cut if e.partition == part]
    assert b.enqueue(scoring(urls)) == 0
    assert b.feed([(e, False) for e in cut if e.partition == part]).column(
        "cookies").to_pylist()[0] is not None
    assert b.robots.stored(origin_of(urls[0])) is not None
    # a new URL of the partition gets a key of its own, not one of the copy's
    queued = b.queue.queued
    assert b.enqueue(scoring([f"http://{host}/new"])) == 1 and b.queue.queued == queued + 1
    # reopened, each shard counts the partitions it owns
    b.close()
    b = DBShard(config(tmp_path), 1, owned={part})
    assert b.queue.by_part[part] == before[2] + 1
    b.slots = HostSlots(0.0)  # no politeness: cut it all
    got = []
    while (cut_now := b.cut(100, None)[1]):
        got += cut_now
        b.release_hosts({e.host for e in cut_now})
    assert {e.partition for e in got} == {part} and len(got) == before[2] + 1
    assert not done & {e.fingerprint for e in got}


def test_keys_of_a_partition_not_owned_are_left_alone(tmp_path):
    a, cut = filled(tmp_path)
    queued, part = a.queue.queued, cut[0].partition
    mine = a.queue.by_part[part]
    a.close()
    others = DBShard(config(tmp_path), 0, owned=set(range(P)) - {part})
    assert others.queue.queued == queued - mine and part not in others.queue.part_hosts
    assert others.store.count(part) > 0  # inert until it is dropped or owned again


def test_strategy_state_moves_with_its_partition(tmp_path):
    cfg = CrawlConfig(out=str(tmp_path / "out"), partitions=SP, max_pages_per_host=3)
    a = StrategyRunner(cfg, Store(str(tmp_path / "a"), tables=STRATEGY_TABLES))
    b = StrategyRunner(cfg, Store(str(tmp_path / "b"), tables=STRATEGY_TABLES))
    a.add_seeds(feed(["http://a.com/"]))
    a.commit()
    pages, links = spider_log([("http://a.com/", 0, 200, None)],
                              [("http://a.com/", 0, f"http://a.com/{i}", 1) for i in range(5)])
    first = a.process_spider_log(pages, links)
    a.commit()
    assert first.column("skip").to_pylist().count("host-budget") == 3  # 3 a host: 2 left
    part = url_info("http://a.com/", SP).partition
    keys = keys_by_partition(a.states.store, STRATEGY_TABLES)
    assert set(keys) == {part}
    with pytest.raises(ValueError, match="before it was fenced"):
        a.export_partition(part)
    a.fence([part])
    b.adopt_partition(a.export_partition(part))
    a.drop_partition(part)
    assert a.states.store.count(part) == 0
    # b knows the page crawled and the links queued, and the host's budget is spent
    again = b.process_spider_log(pages, links)
    assert again.num_rows == 0 and b.counters["duplicate_pages"] == 1
    more = b.process_spider_log(*spider_log([], [("http://a.com/", 0, "http://a.com/x", 1)]))
    assert more.column("skip").to_pylist() == ["host-budget"]


def test_a_cut_merges_partitions_by_score_and_takes_turns_on_ties(store):
    q = FrontierQueue(store, layered=False)
    entries = [Entry(f"http://h{i}.test/", i, f"h{i}.test", i % 4, 0, score)
               for i, score in enumerate([0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])]
    q.push(entries)
    _, got = q.cut(8, 1, HostSlots(0), None)
    assert [e.score for e in got] == sorted((e.score for e in entries), reverse=True)
    ties = [Entry(f"http://t{i}.test/", 100 + i, f"t{i}.test", i % 4, 0, 1.0) for i in range(8)]
    q.push(ties)
    firsts = [q.cut(1, 1, HostSlots(0), None)[1][0].partition for _ in range(4)]
    assert len(set(firsts)) > 1  # tied partitions take turns going first


def test_a_store_of_the_old_layout_is_refused_with_one_line(tmp_path):
    old = Rdict(str(tmp_path / "old"), Options(raw_mode=True))
    old[b"s" + (12345).to_bytes(8, "big")] = b"\x01"
    old.close()
    with pytest.raises(StorageError, match="layout 1.*reads layout 2") as caught:
        Store(str(tmp_path / "old"))
    assert "\n" not in str(caught.value)
    fresh = Store(str(tmp_path / "new"))
    assert fresh.get(LAYOUT_KEY) == b"2"
    fresh.close()
    assert Store(str(tmp_path / "new")).get(LAYOUT_KEY) == b"2"


def test_a_reopened_queue_cuts_older_entries_after_a_requeue(tmp_path):
    store = Store(str(tmp_path / "db"))
    q = FrontierQueue(store, layered=False)
    q.push([Entry(f"http://h{i}.test/", i, f"h{i}.test", 0, 0, 1.0) for i in range(3)])
    store.close()
    store = Store(str(tmp_path / "db"))
    q = FrontierQueue(store, layered=False)  # no seek point known yet
    q.push([Entry("http://late.test/", 99, "late.test", 0, 0, 1.0)])  # a newer key
    _, got = q.cut(10, 1, HostSlots(0), None)
    assert sorted(e.fingerprint for e in got) == [0, 1, 2, 99]


def test_bounded_iterators_end_at_their_bound_after_a_collection(tmp_path):
    """A cut holds one bounded iterator per partition it reads; each ends at its own bound
    even once Python has collected everything else (rocksdict's iterator does not hold its
    read options: iterate_from hands them back to be kept)."""
    store = Store(str(tmp_path / "s"))
    wb = store.batch()
    for i in range(1000):
        wb.put(b"q" + i.to_bytes(2, "big"), b"x")
    store.write(wb)
    held = [store.iterate_from(b"q" + i.to_bytes(2, "big"), b"q" + (i + 100).to_bytes(2, "big"))
            for i in range(0, 900, 100)]
    gc.collect()
    _junk = [bytes(100) for _ in range(10_000)]  # reuse what was freed
    counts = []
    for it, _ in held:
        n = 0
        while it.valid():
            n += 1
            it.next()
        counts.append(n)
    assert counts == [100] * 9
    assert [k for k, _ in store.scan(b"q\x00\x05", b"q\x00\x08")] == [
        b"q\x00\x05", b"q\x00\x06", b"q\x00\x07"]
    store.close()


@pytest.mark.parametrize("owners", [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 2], [2, 2, 0, 2]])
def test_rows_go_to_their_partitions_owner_each_once_in_their_order(owners):
    import numpy as np
    import pyarrow as pa

    from raycrawl.routing import split_by_owner

    batch = pa.RecordBatch.from_pydict({"partition": [3, 0, 2, 1, 3, 2],
                                        "url": ["a", "b", "c", "d", "e", "f"]})
    split = split_by_owner(batch, np.array(owners))
    assert sorted(split) == sorted(set(owners[p] for p in (3, 0, 2, 1)))
    for worker, part in split.items():
        assert part.to_pylist() == [row for row in batch.to_pylist()
                                    if owners[row["partition"]] == worker]
    assert split_by_owner(batch.slice(0, 0), np.array(owners)) == {}
