"""The DB worker's queue: durable, deduplicated, polite batch cutting."""

import dataclasses
import time
import zlib
from collections import Counter

import pytest

from raycrawl.db_worker.politeness import HOST_RUN_S, HostSlots
from raycrawl.db_worker.queue import COUNTS_KEY, Entry, FrontierQueue
from raycrawl.storage.store import LAYOUT_KEY, Store


def entry(i, host="a.com", depth=0, score=1.0):
    # A host's number from crc32, not hash(): str hashes are salted per process, and in one
    # process of a thousand two hosts' numbers mod 1000 were equal (their URLs, one).
    fingerprint = 1000 + i + zlib.crc32(host.encode()) * 10_000
    return Entry(f"http://{host}/{i}", fingerprint, host, 0, depth, score)


def test_push_is_idempotent_by_fingerprint(store):
    q = FrontierQueue(store, layered=False)
    e = entry(1)
    assert q.push([e, e]) == 1
    assert q.push([e]) == 0
    assert q.queued == 1


def test_cut_respects_host_cap_and_priority(store):
    q = FrontierQueue(store, layered=False)
    q.push([entry(i, "a.com", score=0.1) for i in range(5)] + [entry(9, "b.com", score=0.9)])
    batch_id, got = q.cut(10, host_cap=2, slots=HostSlots(0), max_layer=None, scan_limit=100)
    assert batch_id > 0
    assert [e.host for e in got] == ["b.com", "a.com", "a.com"]  # higher score first
    assert [e.url for e in got[1:]] == ["http://a.com/0", "http://a.com/1"]  # FIFO per score
    assert q.queued == 3


def test_leased_and_waiting_hosts_are_skipped(store):
    q = FrontierQueue(store, layered=False)
    slots = HostSlots(delay_s=60)
    q.push([entry(i, "a.com") for i in range(3)] + [entry(i, "b.com") for i in range(3)])
    _, first = q.cut(10, 1, slots, None, 100)
    assert {e.host for e in first} == {"a.com", "b.com"}
    _, second = q.cut(10, 1, slots, None, 100)
    assert second == []  # both hosts leased
    now = time.monotonic()
    slots.release({"b.com"}, now=now)  # released just now: must wait 60 s
    slots.release({"a.com"}, now=now - 61)  # released 61 s ago: ready
    _, third = q.cut(10, 1, slots, None, 100)
    assert [e.host for e in third] == ["a.com"]
    assert not slots.available("b.com", now) and slots.available("b.com", now + 60)


def test_layers_gate_the_cut(store):
    q = FrontierQueue(store, layered=True)
    q.push([entry(1, depth=2), entry(2, "b.com", depth=0), entry(3, "c.com", depth=1)])
    assert q.queued_up_to(0) == 1 and q.queued_up_to(1) == 2 and q.queued == 3
    _, got = q.cut(10, 5, HostSlots(0), max_layer=0, scan_limit=100)
    assert [e.depth for e in got] == [0]
    _, got = q.cut(10, 5, HostSlots(0), max_layer=2, scan_limit=100)
    assert sorted(e.depth for e in got) == [1, 2]


def complete(q, store, batch_id, fps):
    """Complete a batch in a write of its own; returns the fingerprints done first."""
    wb = store.batch()
    completion = q.complete(wb, batch_id, [(0, fp) for fp in fps])
    store.write(wb)
    q.apply(completion)
    return [fp for _, fp in completion.fresh]


def test_complete_outputs_each_url_once(store):
    q = FrontierQueue(store, layered=False)
    q.push([entry(1), entry(2, "b.com")])
    batch_id, got = q.cut(10, 5, HostSlots(0), None, 100)
    fps = [e.fingerprint for e in got]
    assert complete(q, store, batch_id, fps) == fps
    assert complete(q, store, batch_id, fps) == []  # the same batch applied twice: nothing
    assert q.stale_leases() == []


def test_state_survives_reopen(tmp_path):
    s = Store(str(tmp_path / "db"))
    q = FrontierQueue(s, layered=True)
    q.push([entry(i, depth=i % 2) for i in range(6)])
    batch_id, _ = q.cut(2, 5, HostSlots(0), None, 100)
    s.close()
    s = Store(str(tmp_path / "db"))
    q = FrontierQueue(s, layered=True)
    assert q.queued == 4 and q.stale_leases() == [batch_id]
    assert q.push([entry(0)]) == 0  # still known after reopening
    next_id, _ = q.cut(1, 5, HostSlots(0), None, 100)
    assert next_id > batch_id
    s.close()


def test_scan_limit_bounds_a_cut(store):
    q = FrontierQueue(store, layered=False)
    q.push([entry(i, "a.com") for i in range(50)] + [entry(99, "b.com", score=0.0)])
    _, got = q.cut(10, 1, HostSlots(0), None, scan_limit=10)
    assert [e.host for e in got] == ["a.com"]  # b.com lies beyond the scan limit


def test_failing_host_backs_off_exponentially_then_parks():
    slots = HostSlots(delay_s=0, backoff_s=1.0, max_backoff_s=3.0, park_after=3)
    slots.record_outcome("h", healthy=False, now=100.0)
    assert slots.ready_at["h"] == 101.0 and not slots.available("h", 100.5)
    slots.record_outcome("h", healthy=False, now=101.0)
    assert slots.ready_at["h"] == 103.0  # 2 s
    slots.record_outcome("g", healthy=False, now=101.0)
    slots.record_outcome("g", healthy=True, now=101.5)  # answered: the count starts over
    assert "g" not in slots.failures
    slots.record_outcome("h", healthy=False, now=103.0)
    assert slots.ready_at["h"] == 106.0  # capped at 3 s
    assert slots.parked == {"h": "host-unreachable"}
    assert slots.available("h", 103.0)  # parked hosts are drained at once, as errors


def test_crawl_delay_raises_the_host_delay():
    slots = HostSlots(delay_s=0.5)
    slots.crawl_delay["slow.com"] = 2.0
    slots.release({"slow.com", "fast.com"}, now=10.0)
    assert slots.ready_at == {"slow.com": 12.0, "fast.com": 10.5}


def test_cut_seeks_past_what_was_taken_and_never_skips_a_live_entry(store):
    starts = []
    iterate_from = store.iterate_from

    def recording(start, stop):
        starts.append(start)
        return iterate_from(start, stop)

    q = FrontierQueue(store, layered=True)
    store.iterate_from = recording
    slots = HostSlots(0)
    q.push([entry(i, f"h{i}.com", depth=1) for i in range(50)] + [entry(100, "busy.com", depth=1)])
    first_id, first = q.cut(20, 1, slots, None, 1000)
    assert len(first) == 20
    _, second = q.cut(20, 1, slots, None, 1000)
    assert starts[1] > starts[0]  # not from the first queue key, past the tombstones
    assert {e.url for e in second}.isdisjoint({e.url for e in first})
    # a key that sorts below the seek point: a higher score, a shallower layer, a requeue
    q.push([entry(200, "new.com", depth=1, score=9.0), entry(201, "shallow.com", depth=0)])
    wb = store.batch()  # the first batch's URLs all retried
    completion = q.complete(wb, first_id, [], retry=first)
    store.write(wb)
    q.apply(completion)
    slots.release({e.host for e in first}, time.monotonic())
    _, third = q.cut(100, 1, slots, None, 1000)
    urls = [e.url for e in third]
    assert urls[:2] == ["http://shallow.com/201", "http://new.com/200"]
    assert {e.url for e in first} <= set(urls)
    # everything pushed is cut exactly once
    everything = {e.url for e in first + second + third}
    while q.queued:
        slots.release(set(slots.leased), time.monotonic())
        _, more = q.cut(100, 1, slots, None, 1000)
        assert more and not everything & {e.url for e in more}
        everything |= {e.url for e in more}
    assert len(everything) == 53


def test_entries_of_a_leased_host_are_cut_once_it_is_released(store):
    q = FrontierQueue(store, layered=False)
    slots = HostSlots(0)
    q.push([entry(i, "a.com") for i in range(4)] + [entry(i, "b.com") for i in range(10, 14)])
    _, first = q.cut(4, 2, slots, None, 100)  # two of a.com, two of b.com; two of each left
    assert len(first) == 4
    _, second = q.cut(4, 2, slots, None, 100)
    assert second == []  # both leased: the seek point must stay at the first one left
    slots.release({"a.com", "b.com"}, time.monotonic())
    _, third = q.cut(8, 2, slots, None, 100)
    assert sorted(e.url for e in third) == sorted(
        e.url for e in [entry(2), entry(3), entry(12, "b.com"), entry(13, "b.com")])


@pytest.mark.parametrize("layered", [False, True])
@pytest.mark.parametrize("host_cap", [1, 4, 8])
def test_retries_fill_at_most_half_a_hosts_batch_and_all_are_cut_in_turn(store, layered,
                                                                      host_cap):
    """A host's failed URLs come due together, ahead of its other URLs (shallower, or an
    earlier score): a batch takes at most half of the host's share from them (one with a
    share of one), its other URLs fill the rest, and every retry is cut in a later batch."""
    q = FrontierQueue(store, layered=layered)
    slots = HostSlots(0)
    retried = [dataclasses.replace(entry(i, "a.com", score=2.0), attempts=1 + i % 2)
               for i in range(12)]
    fresh = [entry(i, "a.com", depth=1) for i in range(100, 112)]
    other = [dataclasses.replace(entry(i, "b.com", score=2.0), attempts=1) for i in range(6)]
    q.push(retried + fresh + other)
    cap = max(1, host_cap // 2)
    cuts = []
    while q.queued:
        _, got = q.cut(64, host_cap, slots, None, 1000)
        assert got, "queued URLs that no cut takes"
        for host in ("a.com", "b.com"):
            mine = [e for e in got if e.host == host]
            assert len(mine) <= host_cap
            assert sum(e.attempts > 0 for e in mine) <= cap
            if any(e.attempts == 0 for e in q_left(fresh, cuts)) and host == "a.com":
                assert len(mine) == min(host_cap, cap + len(q_left(fresh, cuts)))
        cuts.append(got)
        slots.release(set(slots.leased), time.monotonic())
    urls = [e.url for batch in cuts for e in batch]
    assert sorted(urls) == sorted(e.url for e in retried + fresh + other)  # each once


def test_a_hosts_share_of_a_batch_lasts_at_most_host_run_s_of_its_delay(store):
    """With a cap of 32 a host: at the crawl's 0.3 s delay a batch takes 26 of a host's URLs
    (8 s of requests), of a host with a Crawl-delay of 4 s two (one of them at most a retry),
    of one with 20 s one; with no delay, the cap.  A pause waits for the batches in flight:
    so it waits about HOST_RUN_S at most, whatever the delays."""
    assert HOST_RUN_S == 8.0
    q = FrontierQueue(store, layered=False)
    slots = HostSlots(delay_s=0.3)
    slots.crawl_delay.update({"b.com": 4.0, "c.com": 20.0})
    retried = [dataclasses.replace(entry(i, "b.com", score=2.0), attempts=1) for i in range(3)]
    q.push([entry(i, h) for h in ("a.com", "b.com", "c.com") for i in range(40)] + retried)
    _, got = q.cut(512, 32, slots, None, 10_000)
    assert Counter(e.host for e in got) == {"a.com": 26, "b.com": 2, "c.com": 1}
    assert sum(e.attempts > 0 for e in got) == 1
    assert [slots.batch_cap("a.com", cap) for cap in (1, 8, 26, 27)] == [1, 8, 26, 26]
    free = HostSlots(0)
    free.crawl_delay["c.com"] = 16.0  # (a Crawl-delay counts without a crawl delay too)
    _, got = q.cut(512, 32, free, None, 10_000)
    assert Counter(e.host for e in got) == {"a.com": 14, "b.com": 32, "c.com": 1}


def q_left(entries, cuts):
    taken = {e.url for batch in cuts for e in batch}
    return [e for e in entries if e.url not in taken]


def test_the_tables_of_a_db_worker_store_have_distinct_prefixes():
    from raycrawl.coordinator import budget
    from raycrawl.db_worker import queue, robots, shard
    from raycrawl.output import durable as output

    prefixes = [queue._Q, queue._F, queue._L, queue._P, queue._C, queue._D, queue._W, queue._O,
                shard._COOKIES, robots.TABLE, budget._KEY, output.PAGE_KEYS.staged,
                output.PAGE_KEYS.recorded, output.ITEM_KEYS.staged, output.ITEM_KEYS.recorded]
    assert len(prefixes) == len(set(prefixes)) == 15
    assert all(p[:1] != LAYOUT_KEY[:1] for p in prefixes)
    # the partitioned ones: the queue's but the leases and counters, cookies, robots.txt
    assert set(shard.TABLES) == set(queue._Q + queue._F + queue._P + queue._D + queue._W
                                    + queue._O + shard._COOKIES + robots.TABLE)


class _Counting:
    """A store iterator that records the keys it reads."""

    def __init__(self, it, read):
        self.it, self.read = it, read

    def valid(self):
        return self.it.valid()

    def key(self):
        key = self.it.key()
        self.read.append(key)
        return key

    def value(self):
        return self.it.value()

    def next(self):
        self.it.next()


def test_a_cut_stops_reading_once_every_host_with_urls_is_busy_or_full(store):
    read = []
    iterate_from = store.iterate_from
    q = FrontierQueue(store, layered=False)
    q.push([entry(i * 50 + h, f"h{h}.com") for i in range(20) for h in range(50)])

    def counting(start, stop):
        it, bound = iterate_from(start, stop)
        return _Counting(it, read), bound

    store.iterate_from = counting
    slots = HostSlots(0)
    slots.lease({f"h{h}.com" for h in range(49)})  # all but h49 busy
    _, got = q.cut(100, 2, slots, None)
    assert [e.host for e in got] == ["h49.com", "h49.com"]
    assert len(read) <= 2 * 50 + 1  # not the scan limit's 2000: h49's second URL ends it
    read.clear()
    assert q.cut(100, 2, slots, None) == (0, [])  # every host busy
    assert len(read) <= 150  # until h49's next URL (its first two were taken): not 2000


def _counts(q: FrontierQueue) -> tuple:
    """Everything a queue keeps in memory about its keys."""
    hosts = {h: (v.partition, v.queued, dict(v.later)) for h, v in q.hosts.items()}
    return (hosts, q.part_hosts, +q.by_layer, +q.by_part, q.not_due, +q.not_due_by, q.due_next,
            +q.due, q.has_overrides, q.leased_total, q.queued, q.done_total)


def test_a_clean_close_keeps_the_counts_and_any_other_open_counts_again(tmp_path):
    path = str(tmp_path / "db")
    s = Store(path)
    q = FrontierQueue(s, layered=True, revisits=True, owned={0, 1, 2})
    now = time.time()
    fresh = [dataclasses.replace(entry(i, f"h{i % 7}.com", depth=i % 3, score=i % 4),
                                 partition=i % 7 % 3) for i in range(60)]
    later = [dataclasses.replace(e, fingerprint=e.fingerprint + 1, url=e.url + "?later",
                                 not_before=now + 600, attempts=1) for e in fresh[:9]]
    q.push(fresh + later)
    batch, leased = q.cut(20, 3, HostSlots(0), None)
    wb = s.batch()  # half done, a revisit each; half retried; another batch left in flight
    revisit = {(e.partition, e.fingerprint): dataclasses.replace(e, visit=2, not_before=now + 60)
               for e in leased[:10]}
    q.apply(q.complete(wb, batch, list(revisit), retry=leased[10:], revisit=revisit))
    s.write(wb)
    q.reschedule({(e.partition, e.fingerprint): now + 5 for e in leased[:2]})
    q.cut(5, 1, HostSlots(0), None)
    counted = _counts(q)
    assert counted[4] == 10 + 9 and counted[9] == 5 and counted[8] is False  # (9: later)
    q.close()
    s.close()

    s = Store(path)
    restored = FrontierQueue(s, layered=True, revisits=True, owned={0, 1, 2})
    assert _counts(restored) == counted and s.get(COUNTS_KEY) is None  # read, then deleted
    s.close()  # not a clean close (a crash): the keys are counted again
    s = Store(path)
    recounted = FrontierQueue(s, layered=True, revisits=True, owned={0, 1, 2})
    assert _counts(recounted) == counted
    recounted.close()
    s.close()
    s = Store(path)  # kept for partitions 0-2, opened for 0-1: counted again, for those
    fewer = FrontierQueue(s, layered=True, revisits=True, owned={0, 1})
    assert set(fewer.by_part) == {0, 1} and fewer.queued < counted[10]
    kept = _counts(fewer)
    fewer.close()
    s.close()
    s = Store(path)
    again = FrontierQueue(s, layered=True, revisits=True, owned={0, 1})
    assert _counts(again) == kept
    slots = HostSlots(0)
    for _ in range(20):  # what was restored is what the cut works with: it drains
        _, got = again.cut(100, 100, slots, None)
        if not got:
            break
    assert again.queued == 0 and again.not_due == kept[4] > 0 and not again.hosts
    s.close()


def test_auto_throttle_follows_a_hosts_response_times_and_never_goes_below_the_delay():
    slots = HostSlots(delay_s=0.5, auto_throttle=True)
    slots.observe("slow.com", 4.0, True)
    assert slots.delay("slow.com") == 2.25  # halfway from the delay to the answer's time
    slots.observe("slow.com", 4.0, True)
    assert slots.delay("slow.com") == 3.125
    slots.observe("slow.com", 0.1, False)  # an error answer never shortens it...
    assert slots.delay("slow.com") == 3.125
    slots.observe("slow.com", 10.0, False)  # ...but lengthens it
    assert slots.delay("slow.com") == 6.5625
    slots.observe("fast.com", 0.01, True)
    assert slots.delay("fast.com") == 0.5  # never below the delay
    for _ in range(30):
        slots.observe("hung.com", 1000.0, False)
    assert slots.delay("hung.com") <= 60.0
    slots.lease({"slow.com"})
    slots.release({"slow.com"}, 100.0)
    assert slots.ready_at["slow.com"] == 100.0 + 6.5625  # the next batch waits the learnt delay
    moved = HostSlots(delay_s=0.5, auto_throttle=True)  # a partition's move carries it
    moved.adopt(slots.export({"slow.com"}, 100.0), 50.0)
    assert moved.delay("slow.com") == 6.5625
    off = HostSlots(delay_s=0.5)
    off.observe("slow.com", 4.0, True)
    assert off.delay("slow.com") == 0.5
