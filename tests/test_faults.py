"""Nothing lost: kills and crashes mid-crawl, then the invariants.

Each actor kind killed (a fetch worker, a DB worker, a strategy worker, the coordinator) is
``tests/test_on_cluster.py``'s crawl of 1,800 pages that kills them in turn; here, crashes at each
step of the commit protocol, actors stopped (SIGSTOP) and replaced, ``max_pages`` under faults,
a full disk.

After each fault the crawl must finish by itself with every reachable URL exactly once in
``OUT/pages``, nothing left queued or leased, and repeated fetches bounded by the work that was
in flight when the fault hit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import psutil
import pyarrow.compute as pc
import pytest
import ray

from actors.options import NAMESPACE
from raycrawl import Crawl
from raycrawl.faultpoints import POINTS
from raycrawl.testing import faults
from raycrawl.testing.synthweb import SyntheticWeb
from tests.timeline import HitTimeline

pytestmark = pytest.mark.ray

SETTINGS = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
            "partitions": 8, "robots": False, "retries": 0, "db_workers": 2,
            "strategy_workers": 2, "batch_size": 16, "host_batch_cap": 4,
            "batches_in_flight": 2}
# DB workers x batches in flight (two fetching on one fetch worker, as many handing over) x
# batch size: what a crash may send to be fetched again.
IN_FLIGHT = 2 * (2 * 2) * 16


def slow_web(seed: int) -> SyntheticWeb:
    return SyntheticWeb(hosts=6, pages_per_host=14, seed=seed, latency_s=0.02).start()


def assert_invariants(web: SyntheticWeb, crawl: Crawl, stats: dict) -> None:
    assert stats["phase"] == "finished", stats.get("reason")
    urls = crawl.pages().column("url").to_pylist()
    assert len(urls) == len(set(urls)), "a URL has two rows"
    expected = web.reachable()
    assert set(urls) == set(expected), "a reachable URL is missing"
    assert stats["queued"] == 0 and all(w["leased_urls"] == 0 for w in stats["db_workers"])
    with web.lock:
        hits = dict(web.hits)
    assert all(hits.get(u.removeprefix("http://"), 0) >= 1 for u in expected)
    repeats = sum(n - 1 for n in hits.values())
    assert max(hits.values()) <= 2 and repeats <= IN_FLIGHT, f"{repeats} repeated fetches"


def run_until(crawl: Crawl, fraction_of: int, fraction: float = 0.3) -> None:
    deadline = time.monotonic() + 60
    while crawl.stats()["fetched"] < fraction * fraction_of:
        assert time.monotonic() < deadline, "the crawl did not get going"
        time.sleep(0.05)


def actor_named(prefix: str) -> ray.actor.ActorHandle:
    """The live actor whose name is ``prefix`` or starts with it (fetch workers' names end
    with a token)."""
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == NAMESPACE and a["name"].startswith(prefix))
    assert names, f"no actor named {prefix}..."
    return ray.get_actor(names[0], namespace=NAMESPACE)


@pytest.mark.parametrize("point", POINTS)
def test_crash_at_each_step_of_the_commit_protocol(ray_session, tmp_path, point):
    web = slow_web(seed=37)
    try:
        faults.arm(str(tmp_path / "out" / "state"), point)
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), **SETTINGS).start()
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert faults.fired(str(tmp_path / "out" / "state"), point), "never fired"
        assert_invariants(web, crawl, stats)
    finally:
        web.stop()


@pytest.mark.parametrize("point", ["db-worker.start", "strategy-worker.decided"])
def test_a_worker_slow_to_answer_at_the_start_does_not_fail_the_crawl(ray_session, tmp_path,
                                                                      point):
    """A DB worker (told to start) or a strategy worker (queueing the seeds) holds its process
    for longer than ``actor_timeout_s``, as on a loaded machine: the start tries the step
    again instead of failing the crawl, and the crawl finishes whole."""
    web = slow_web(seed=47)
    state = str(tmp_path / "out" / "state")
    try:
        faults.arm(state, point, hang_s=4.0)
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"),
                      **{**SETTINGS, "actor_timeout_s": 3.0}).start()
        assert faults.fired(state, point), "never fired"
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert_invariants(web, crawl, stats)
        assert stats["errors"] == 0, stats["error_kinds"]
    finally:
        web.stop()


def test_stop_then_resume_continues_with_nothing_lost(ray_session, tmp_path):
    web = slow_web(seed=41)
    try:
        out = tmp_path / "out"
        crawl = Crawl(seeds=[web.seed_url], out=str(out), **SETTINGS).start()
        run_until(crawl, len(web.reachable()), 0.4)
        assert crawl.stop()["phase"] == "stopped"
        resumed = Crawl.attach(str(out / "state"))
        assert resumed.crawl_id == crawl.crawl_id
        stats = resumed.wait(timeout=180, interval_s=0.2)
        assert stats["generation"] == 2
        assert_invariants(web, resumed, stats)
        with pytest.raises(Exception, match="finished"):
            Crawl.attach(str(out / "state"))
    finally:
        web.stop()


@pytest.mark.parametrize("victim", ["strategy-worker-0", "db-worker-1", "db-worker-0/fetcher-"])
def test_a_stopped_actor_is_replaced_and_the_crawl_finishes_whole(ray_session, tmp_path,
                                                                  victim):
    """SIGSTOP, never continued: the actor stops answering without dying.  Its owner notices
    (``actor_timeout_s``), replaces it, and its work runs again; no URL is an error."""
    web = slow_web(seed=43)
    pid = None
    try:
        # A fetch is bounded by its hosts' requests (total_timeout_s each) plus actor_timeout_s.
        # 3 s, not 1: a page that times out is an error row whose links are never found (a CI
        # run once missed the one URL only such a page links; errors are asserted first now).
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"),
                      **{**SETTINGS, "actor_timeout_s": 3.0, "total_timeout_s": 3.0}).start()
        run_until(crawl, len(web.reachable()))
        actor = actor_named(f"{crawl.crawl_id}/{victim}")
        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGSTOP)
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "finished", stats.get("reason")
        pages = crawl.pages()
        errors = pages.filter(pc.is_valid(pages.column("error")))
        assert stats["errors"] == 0, (stats["error_kinds"], errors.select(
            ["url", "error", "error_detail", "duration_s"]).to_pylist())
        urls = pages.column("url").to_pylist()
        assert sorted(urls) == sorted(set(web.reachable())), "a URL missing or twice"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        if pid is not None and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
        web.stop()


@pytest.mark.parametrize("fault", ["db-worker.completed", "db-worker.cut", "coordinator",
                                   "db-worker-0", "db-worker-1/fetcher-"])
def test_max_pages_is_exact_under_faults(ray_session, tmp_path, fault):
    web = slow_web(seed=47)
    max_pages = 40  # of 84 reachable
    try:
        if fault in POINTS:
            faults.arm(str(tmp_path / "out" / "state"), fault)
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), max_pages=max_pages,
                      **SETTINGS).start()
        if fault not in POINTS:
            run_until(crawl, max_pages, 0.25)
            ray.kill(actor_named(f"{crawl.crawl_id}/{fault}"), no_restart=False)
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "finished" and stats["reason"] == "max pages reached"
        urls = crawl.pages().column("url").to_pylist()
        assert len(urls) == len(set(urls)) == max_pages == stats["fetched"]
        assert sum(w["allowance"] for w in stats["db_workers"]) <= max_pages
    finally:
        web.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 280 KiB tmpfs (the state of a crawl fills it mid-crawl); grown by ``grow()``."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=280k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_fails_the_crawl_naming_the_store_and_resume_finishes_it(
        ray_session, tmp_path, small_disk):
    mount, grow = small_disk
    web = SyntheticWeb(hosts=8, pages_per_host=60, seed=5).start()
    try:
        state = mount / "state"
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), state=str(state),
                      **SETTINGS).start()
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "failed", stats.get("reason")
        # Whichever write meets the full disk first names its file: a worker's store, or a
        # state file (the coordinator's lease, its status).
        reason = stats["reason"]
        assert reason.startswith((f"storage error: store {state}/",
                                  f"storage error: state file {state}/")), reason
        assert "No space left on device" in reason
        assert stats["fetched"] < len(web.reachable())
        grow()  # the cause is gone
        resumed = Crawl.attach(str(state))
        stats = resumed.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "finished", stats.get("reason")
        urls = resumed.pages().column("url").to_pylist()
        assert sorted(urls) == sorted(set(web.reachable())), "a URL missing or twice"
        assert stats["errors"] == 0, stats["error_kinds"]
    finally:
        web.stop()


@pytest.mark.parametrize("worker", ["db-worker-1", "strategy-worker-0"])
def test_a_store_deleted_under_a_running_crawl_stops_it_with_a_one_line_reason(
        ray_session, tmp_path, worker):
    """The folder of a worker's store is deleted (a lost disk) and the worker restarted: it
    never goes on with an empty store — its URLs would be lost — but stops the crawl saying
    which store is gone, where."""
    web = slow_web(seed=53)
    state = tmp_path / "out" / "state"
    try:
        crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), **SETTINGS).start()
        run_until(crawl, len(web.reachable()))
        shutil.rmtree(state / worker)
        ray.kill(actor_named(f"{crawl.crawl_id}/{worker}"), no_restart=False)
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert stats["phase"] == "failed", stats["reason"]
        reason = stats["reason"]
        assert reason.startswith(f"{crawl.crawl_id}/{worker} on node "), reason
        assert f"its store {state / worker} is gone" in reason and "\n" not in reason
        assert not (state / worker / "CURRENT").exists(), "an empty store was created"
    finally:
        web.stop()


def test_a_worker_pinned_to_a_node_that_is_gone_counts_as_lost_whatever_its_placement(
        ray_session):
    """An actor pinned to a node that is gone is dead for good (Ray frees its name): a call
    on it is an unplaceable PeerFault that marks its handle, and the coordinator's ``_lost``
    names the worker at once, though its placement names a live node (a restarted
    coordinator placed it anew, and the actor it found by name was still the dead node's);
    a worker of a dead node is named as before, and a live one is not."""
    import asyncio
    from types import SimpleNamespace

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.coordinator import Coordinator
    from actors.peers import DBWorkerHandle, PeerFault, StrategyWorkerHandle

    @ray.remote(num_cpus=0)
    class Pinned:
        def report(self) -> None:
            return None

    gone = "ab" * 28
    pinned = Pinned.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        gone, soft=False)).remote()
    handle = StrategyWorkerHandle(pinned, 10.0, "c/strategy-worker-0")
    with pytest.raises(PeerFault, match="cannot be placed") as caught:
        asyncio.run(handle.report())
    assert caught.value.unplaceable and handle.unplaceable
    live = ray.get_runtime_context().get_node_id()
    coordinator = SimpleNamespace(
        db_workers=[DBWorkerHandle(None, 10.0, "c/db-worker-0"),
                    DBWorkerHandle(None, 10.0, "c/db-worker-1")],
        strategy_workers=[handle], nodes_checked=time.monotonic(),
        placement={"strategy-worker-0": live, "db-worker-0": live, "db-worker-1": gone})
    assert Coordinator._lost(coordinator) == ["strategy-worker-0"]  # nodes asked just now
    coordinator.nodes_checked = -1e9
    assert Coordinator._lost(coordinator) == ["db-worker-1", "strategy-worker-0"]


@pytest.mark.parametrize("worker,where", [("db-worker-1", "local"), ("strategy-worker-0", "s3")])
def test_a_store_deleted_under_a_checkpointed_crawl_is_restored_and_the_crawl_finishes(
        ray_session, tmp_path, request, worker, where):
    """With checkpoints, a lost store takes the whole crawl back to the last one (every store
    restored from it, the output written since dropped), and the crawl finishes with every
    reachable page exactly once; the work redone is what was done since that checkpoint."""
    web = SyntheticWeb(hosts=6, pages_per_host=50, seed=59, latency_s=0.1).start()
    out = str(tmp_path / "out") if where == "local" else \
        f"s3://{request.getfixturevalue('s3').bucket()}/crawl"
    state = tmp_path / "state"
    timeline = HitTimeline(web)
    try:
        crawl = Crawl(seeds=[web.seed_url], out=out, state=str(state), checkpoint_every_s=0.5,
                      **SETTINGS).start()
        run_until(crawl, len(web.reachable()), 0.25)
        after = crawl.stats()["checkpoint"] + 1  # one cut once a quarter is fetched
        deadline = time.monotonic() + 60
        while (stats := crawl.stats())["checkpoint"] <= after:
            assert stats["phase"] == "running", stats.get("reason")
            assert time.monotonic() < deadline, "no checkpoint was published"
            time.sleep(0.05)
        shutil.rmtree(state / worker)
        ray.kill(actor_named(f"{crawl.crawl_id}/{worker}"), no_restart=False)
        stats = crawl.wait(timeout=180, interval_s=0.2)
        assert stats["rollbacks"] == 1, stats.get("reason")
        timeline.stop()
        assert_invariants_after_rollback(web, crawl, stats, timeline)
        assert (state / worker / "CURRENT").exists()
    finally:
        timeline.stop()
        web.stop()


def assert_invariants_after_rollback(web: SyntheticWeb, crawl: Crawl, stats: dict,
                                     timeline: HitTimeline) -> None:
    """:func:`assert_invariants`, the repeats bounded by the work since the checkpoint the
    crawl went back to (what the crawl had fetched then is in OUT's rollback record) until
    the rollback (the others fetch on until it drains them)."""
    from raycrawl.storage import checkpoints
    rollback = checkpoints.read_rollback(crawl.config.out)
    assert rollback is not None and rollback.generation == 1
    assert rollback.fetched > len(web.reachable()) // 5, "the checkpoint held no work"
    since = timeline.at(rollback.at) - rollback.fetched
    assert stats["phase"] == "finished", stats.get("reason")
    urls = crawl.pages().column("url").to_pylist()
    assert len(urls) == len(set(urls)), "a URL has two rows"
    assert set(urls) == set(web.reachable()), "a reachable URL is missing"
    assert stats["queued"] == 0 and all(w["leased_urls"] == 0 for w in stats["db_workers"])
    assert not stats["errors"], stats["error_kinds"]
    with web.lock:
        hits = dict(web.hits)
    repeats = sum(n - 1 for n in hits.values())
    assert repeats <= since + 2 * IN_FLIGHT, f"{repeats} repeated fetches, {since} since"
