"""A crawl owns its --out and --state: second crawls and drivers are refused, clearly."""

import functools
import json
import shutil

import pytest

from raycrawl.errors import CrawlStateError
from raycrawl.storage.identity import claim_store, prepare_store, store_path
from raycrawl.storage.ownership import (
    LEASE_S,
    OWNER,
    check_new_state,
    claim_out,
    release_lease,
    take_lease,
)
from raycrawl.storage.statefiles import MANIFEST, write_json
from raycrawl.storage.store import Store


def started(state, crawl_id):
    state.mkdir(parents=True, exist_ok=True)
    write_json(str(state), MANIFEST, {"crawl_id": crawl_id})


def test_a_second_crawl_may_not_take_the_first_ones_out(tmp_path):
    out, state = tmp_path / "out", tmp_path / "state-a"
    claim_out(str(out), "a", str(state))
    claim_out(str(out), "b", str(tmp_path / "state-b"))  # a never started: b may take it
    started(tmp_path / "state-b", "b")
    claim_out(str(out), "b", str(tmp_path / "state-b"))  # the same crawl again: fine
    with pytest.raises(CrawlStateError, match="holds the pages of crawl b"):
        claim_out(str(out), "c", str(tmp_path / "state-c"))


def test_a_new_crawl_may_not_start_in_a_used_state_folder(tmp_path):
    state = tmp_path / "state"
    check_new_state(str(state), "a")  # empty: fine
    started(state, "a")
    with pytest.raises(CrawlStateError, match="already holds crawl a.*raycrawl resume"):
        check_new_state(str(state), "b")
    with pytest.raises(CrawlStateError, match="already exists"):
        check_new_state(str(state), "a")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_a_lease_renewed_by_a_live_driver_refuses_another(tmp_path):
    state = str(tmp_path)
    clock = Clock()
    take_lease(state, "c", 2, "cluster-a", clock, clock.sleep)

    def live_holder_sleep(s):  # the other coordinator renews while we watch
        clock.sleep(s)
        take_lease(state, "c", 2, "cluster-a", clock, clock.sleep)

    with pytest.raises(CrawlStateError, match="in use by crawl c generation 2"):
        take_lease(state, "c", 3, "cluster-b", clock, live_holder_sleep)
    take_lease(state, "c", 2, "cluster-a", clock, clock.sleep)  # its own: renewed at once


def test_a_lease_nobody_renews_is_taken_over(tmp_path):
    state = str(tmp_path)
    clock = Clock()
    take_lease(state, "c", 1, "cluster-a", clock, clock.sleep)  # then its cluster died
    take_lease(state, "c", 2, "cluster-b", clock, clock.sleep)
    assert clock.now - 1000.0 >= LEASE_S  # it waited for the lease to go stale, no longer
    lease = json.loads((tmp_path / OWNER).read_text())
    assert (lease["generation"], lease["cluster"]) == (2, "cluster-b")
    release_lease(state, "c", 2, "cluster-b")  # ended: the next one starts at once
    before = clock.now
    take_lease(state, "c", 3, "cluster-c", clock, clock.sleep)
    assert clock.now == before


def test_a_lease_of_a_coordinator_seen_gone_is_taken_at_once(tmp_path):
    state = str(tmp_path)
    clock = Clock()
    take_lease(state, "c", 1, "cluster-a", clock, clock.sleep)  # failed, could not release
    take_lease(state, "c", 2, "cluster-a", clock, clock.sleep, holder_gone_on="cluster-a")
    assert clock.now == 1000.0  # no wait


def test_a_store_carries_its_identity_and_its_creation_is_recorded_outside_it(tmp_path):
    state = str(tmp_path)
    present = functools.partial(prepare_store, state, str(tmp_path / "out"), True,
                                "db-worker-0", "c/db-worker-0")
    assert present("n1") == 0  # never created: fine
    db = Store(store_path(state, "db-worker-0"))
    out = str(tmp_path / "out")
    claim_store(db, out, "c", "db-worker-0", "c/db-worker-0", "n1")
    claim_store(db, out, "c", "db-worker-0", "c/db-worker-0", "n2")  # its own: fine
    assert json.loads((tmp_path / "out" / "_crawl" / "stores" / "db-worker-0.json")
                      .read_text())["node"] == "n1"  # (not on the store's disk)
    with pytest.raises(CrawlStateError, match=r"^c/db-worker-1 on node n1: .* holds the store "
                                              r"of db-worker-0 of crawl c, not its own"):
        claim_store(db, out, "c", "db-worker-1", "c/db-worker-1", "n1")
    with pytest.raises(CrawlStateError, match="of crawl c, not its own"):
        claim_store(db, out, "d", "db-worker-0", "d/db-worker-0", "n1")
    db.close()
    assert present("n1") == 0  # there: fine
    shutil.rmtree(store_path(state, "db-worker-0"))
    with pytest.raises(CrawlStateError, match=r"^c/db-worker-0 on node n2: its store .*"
                                              r"db-worker-0 is gone \(created .* on node n1\)"):
        present("n2")
