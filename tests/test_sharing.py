"""Crawls sharing a cluster's CPUs: fair shares, the split among DB workers, the registry's
table (no Ray)."""

from __future__ import annotations

import pytest

from raycrawl.config import CrawlConfig
from raycrawl.coordinator.phases import Phase
from raycrawl.coordinator.sharing import (
    ANY,
    CrawlEntry,
    CrawlTable,
    fair_shares,
    lenders,
    scale_to,
    split_share,
    wants,
    within_share,
)


@pytest.mark.parametrize("cpus,wants_,expected", [
    (2, [("a", ANY)], {"a": 2}),
    (2, [("a", ANY), ("b", ANY)], {"a": 1, "b": 1}),  # the second is not starved
    (2, [("a", ANY), ("b", ANY), ("c", ANY)], {"a": 1, "b": 1, "c": 0}),  # first come first
    (8, [("a", 1), ("b", ANY), ("c", ANY)], {"a": 1, "b": 4, "c": 3}),  # a cap frees CPUs
    (5, [("a", 0), ("b", ANY)], {"a": 0, "b": 5}),  # paused: holds none
    (0, [("a", ANY)], {"a": 0}),
    (7, [("a", 2), ("b", 2)], {"a": 2, "b": 2}),  # never more than wanted
])
def test_fair_shares(cpus, wants_, expected):
    shares = fair_shares(cpus, wants_)
    assert shares == expected
    assert sum(shares.values()) <= cpus


def test_fair_shares_never_exceed_the_cpus_whatever_the_mix():
    for cpus in range(0, 13):
        for n in range(1, 6):
            for cap in (0, 1, 3, ANY):
                wants_ = [(f"c{i}", cap if i % 2 else ANY) for i in range(n)]
                shares = fair_shares(cpus, wants_)
                assert sum(shares.values()) <= cpus
                assert all(shares[c] <= w for c, w in wants_)
                hungry = [c for c, w in wants_ if shares[c] < w]
                if hungry:  # someone wanted more: every CPU is used
                    assert sum(shares.values()) == cpus


def test_split_share_among_db_workers_stays_put_and_lends_when_short():
    assert split_share(4, [5, 5]) == [2, 2]
    assert split_share(3, [5, 5]) == [2, 1]
    assert split_share(1, [0, 9]) == [0, 1]  # the worker with work first
    # A worker that holds one keeps it, with work or not: the other is lent it.
    assert split_share(1, [0, 9], has=[1, 0]) == [1, 0]
    assert split_share(3, [5, 5, 5], has=[0, 1, 2]) == [1, 1, 1]
    assert split_share(2, [0, 5, 5], has=[0, 0, 1]) == [0, 1, 1]
    assert split_share(0, [5, 5]) == [0, 0]
    assert split_share(2, []) == []
    assert lenders([1, 0, 0]) == [(), (0,), (0,)]
    assert lenders([0, 2, 1]) == [(1, 2), (), ()]
    assert lenders([0, 0]) == [(), ()]  # a share of 0: nobody fetches


def test_wants_follows_the_phase_and_the_caps():
    assert wants(CrawlConfig(), Phase.RUNNING) == ANY
    assert wants(CrawlConfig(fetch_workers=3), Phase.RUNNING) == 3
    assert wants(CrawlConfig(batches_in_flight=4, db_workers=2), Phase.STARTING) == 4
    for phase in (Phase.PAUSED, Phase.STOPPING, Phase.FINISHED, Phase.STOPPED):
        assert wants(CrawlConfig(), phase) == 0


def test_the_table_reshares_on_every_change_and_forgets_silent_crawls():
    table = CrawlTable(ttl_s=10)
    table.set_cpus(2, now=0)
    assert table.register(CrawlEntry("a", wants=ANY), now=0).share == 2
    assert table.register(CrawlEntry("b", wants=ANY), now=1).share == 1
    assert table.register(CrawlEntry("a", wants=ANY), now=2).share == 1
    assert [e.crawl_id for e in table.crawls(now=3)] == ["a", "b"]  # first registered first
    table.register(CrawlEntry("b", wants=ANY), now=11)  # a went silent for > ttl
    assert [e.crawl_id for e in table.crawls(now=12.5)] == ["b"]
    assert table.entries["b"].share == 2
    table.unregister("b", now=13)
    assert table.crawls(now=13) == []


def test_a_listed_line_starts_with_the_crawl_id_and_says_why_it_waits():
    line = CrawlEntry("c1", state="/s/state", wants=ANY, phase="running", fetched=12,
                      pages_per_s=3.5, share=0).line(cpus=2, crawls=3)
    assert line.split()[0] == "c1"
    assert "waiting for CPUs: 3 crawls share 2" in line and "/s/state" in line


def test_a_quota_grows_only_into_what_retiring_workers_freed():
    # Worker 0 keeps its fetch worker until its batches end: worker 1 waits for it.
    assert within_share([0, 1], has=[1, 0], share=1) == [0, 0]
    assert within_share([0, 1], has=[0, 0], share=1) == [0, 1]
    assert within_share([2, 2], has=[0, 0], share=4) == [2, 2]
    assert within_share([1, 3], has=[3, 0], share=4) == [1, 1]
    for quotas, held in [([0, 2], [2, 0]), ([3, 0, 1], [0, 2, 2])]:
        out = within_share(quotas, held, share=4)
        assert sum(max(q, h) for q, h in zip(out, held)) <= 4


def test_a_quota_not_yet_used_counts_as_held():
    # Worker 0 was granted 1 and has not started its fetch worker yet: it may start it before
    # it hears that its quota is 0, so worker 1 waits for the next pass (CI, stop 26: both
    # held one under a cap of one).
    assert within_share([0, 1], has=[0, 0], share=1, granted=[1, 0]) == [0, 0]
    assert within_share([0, 1], has=[0, 0], share=1, granted=[0, 0]) == [0, 1]
    assert within_share([1, 2], has=[0, 1], share=3, granted=[2, 1]) == [1, 1]
    for quotas, held, granted in [([0, 2], [1, 0], [2, 0]), ([3, 0, 1], [0, 2, 0], [1, 2, 1])]:
        out = within_share(quotas, held, 4, granted)
        assert sum(max(q, h, g) for q, h, g in zip(out, held, granted)) <= 4


def test_a_crawl_asks_the_autoscaler_for_what_its_ready_work_needs_within_its_bound():
    cfg = CrawlConfig(max_fetch_workers=5, batch_size=10)
    assert scale_to(CrawlConfig(), Phase.RUNNING, 10_000, 4) == 0  # never asks by default
    assert scale_to(cfg, Phase.PAUSED, 10_000, 4) == 0
    assert scale_to(cfg, Phase.RUNNING, 0, 0) == 1  # at least one
    assert scale_to(cfg, Phase.RUNNING, 40, 2) == 2  # 6 batches, three a worker
    assert scale_to(cfg, Phase.RUNNING, 10_000, 4) == 5  # at most max_fetch_workers
    assert scale_to(cfg.replace(fetch_workers=3), Phase.RUNNING, 10_000, 4) == 3
    # it wants no more than it asks for: its share follows the work down
    assert wants(cfg, Phase.RUNNING, scale=2) == 2
    assert wants(CrawlConfig(fetch_workers=7), Phase.RUNNING, scale=0) == 7


def test_the_autoscaler_is_asked_for_every_crawls_workers_only_while_one_asks():
    table = CrawlTable()
    table.set_cpus(2, 0.0)
    table.register(CrawlEntry("a", wants=ANY), 0.0)
    assert table.requested() == 0  # nobody asks: no request
    table.register(CrawlEntry("b", wants=4, scale_to=4), 0.1)
    assert [e.share for e in table.crawls(0.2)] == [1, 1]
    assert table.requested() == 1 + 4  # a holds its share, b asks for 4
    table.register(CrawlEntry("b", wants=1, scale_to=1), 0.3)  # b's work drained
    assert table.requested() == 1 + 1
    table.unregister("b", 0.4)
    assert table.requested() == 0  # withdrawn
