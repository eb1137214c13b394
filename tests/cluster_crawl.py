"""A crawl on a cluster of three nodes on this machine that loses one: run by
``tests/test_on_cluster.py`` in a process of its own (the test process is joined to the
session's Ray), with ``ray.cluster_utils.Cluster``: a head (the driver's node: the coordinator)
and two worker nodes offering ``raycrawl_state`` (the stateful group: they hold the four DB
and strategy workers, two each).  Once a checkpoint holds a third of the crawl, the node of
``db-worker-1`` is killed and what the node's disk held is deleted (the nodes share this
machine's disk: a lost disk is simulated): the store folders of the workers that ran there,
their DB workers' spooled streams and the WARC files its fetch workers spooled.  The crawl
writes WARC files and streams; once it ended, every row's WARC records and stream messages
are checked here.  Prints one JSON line: the crawl's end, what was lost, the checkpoint it
went back to and what the checks found (``RESULT {...}``: Ray prints its workers' logs on the
same stdout).

    python tests/cluster_crawl.py OUT STATE PAGES
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from raycrawl import Crawl
from raycrawl.coordinator.placement import PLACEMENT, STATE_RESOURCE
from raycrawl.formats.streams import read_stream, stream_path
from raycrawl.storage import checkpoints
from raycrawl.storage.location import Location
from raycrawl.testing.synthweb import SyntheticWeb
from tests.test_warc import check_every_row_has_its_records
from tests.timeline import HitTimeline


def lose_spools(state: str, lost: list[str], fetchers: list[str]) -> int:
    """Delete the spooled streams of the ``lost`` DB workers and the WARC files the
    ``fetchers`` (actor names) spooled; returns how many files went."""
    gone = [os.path.join(state, "streams-spool", os.path.basename(stream_path(
        "", int(w.rsplit("-", 1)[1]), "msgpack"))) for w in lost if w.startswith("db-worker-")]
    spool = os.path.join(state, "warc-spool")
    prefixes = tuple(name.split("/", 1)[1].replace("/", "-") + "-" for name in fetchers)
    gone += [os.path.join(spool, n) for n in os.listdir(spool) if n.startswith(prefixes)]
    for path in gone:
        if os.path.exists(path):
            os.remove(path)
    return len(gone)


def logged_urls(out: str, work: str, workers: int) -> set[str]:
    """The URLs of the page_crawled and request_error messages of every DB worker's stream."""
    found: set[str] = set()
    for worker in range(workers):
        local = os.path.join(work, f"stream-{worker}")
        Location.of(out).child("streams").download(
            os.path.basename(stream_path("", worker, "msgpack")), local)
        found |= {m[1].url for m in read_stream(local, "msgpack")
                  if m[0] in ("page_crawled", "request_error")}
    return found


# A lost node is noticed by the head's health checks: Ray's defaults (a check every 3 s, 5 failed
# in a row) take 15 s of a test's time; a check a second, 3 failed, take 3.  (A live node's
# slow answer is not a failure until its 10 s timeout.)
HEAD_NODE_ARGS = {"num_cpus": 1, "_system_config": {"health_check_period_ms": 1000,
                                                    "health_check_failure_threshold": 3}}


def main(out: str, state: str, pages: int) -> None:
    cluster = Cluster(initialize_head=True, head_node_args=HEAD_NODE_ARGS)
    nodes = [cluster.add_node(num_cpus=1, resources={STATE_RESOURCE: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="raycrawl", logging_level="WARNING")
    web = SyntheticWeb(hosts=10, pages_per_host=pages // 10, seed=71, latency_s=0.05).start()
    try:
        crawl = Crawl(seeds=[web.seed_url], out=out, state=state, delay_s=0.0, retries=0,
                      allow_network=("127.0.0.0/8",), robots=False, partitions=8,
                      db_workers=2, strategy_workers=2, checkpoint_every_s=1.0,
                      batch_size=16, host_batch_cap=4, batches_in_flight=2,
                      actor_timeout_s=20.0, warc=True, log_streams=True).start()
        reachable = len(web.reachable())
        timeline = HitTimeline(web)
        deadline = time.monotonic() + 300
        while (stats := crawl.stats())["fetched"] < reachable // 3 or stats["checkpoint"] < 2:
            assert stats["phase"] == "running", stats.get("reason")
            assert time.monotonic() < deadline, "the crawl did not get going"
            time.sleep(0.1)
        after = stats["checkpoint"] + 1  # a checkpoint with a third of the crawl in it
        while (stats := crawl.stats())["checkpoint"] <= after:
            assert stats["phase"] == "running", stats.get("reason")
            assert time.monotonic() < deadline, "no checkpoint was published"
            time.sleep(0.1)
        with open(os.path.join(state, PLACEMENT)) as fh:
            placement = json.load(fh)
        victim = next(n for n in nodes if n.node_id == placement["db-worker-1"])
        lost = sorted(w for w, node in placement.items() if node == victim.node_id)
        fetchers = [a.name for a in list_actors(filters=[("node_id", "=", victim.node_id)])
                    if "/fetcher-" in (a.name or "")]
        fetched_at_loss = crawl.stats()["fetched"]
        cluster.remove_node(victim, allow_graceful=False)
        for worker in lost:
            shutil.rmtree(os.path.join(state, worker))
        spools_lost = lose_spools(state, lost, fetchers)
        stats = crawl.wait(timeout=600, interval_s=0.5, progress=lambda s: print(
            f"{s.fetched} fetched, {s.queued} queued, {dict(s.queued_by_reason)}, "
            f"{s.in_flight_batches} in flight, rollbacks {s.rollbacks}", file=sys.stderr))
        rollback = checkpoints.read_rollback(out)
        timeline.stop()
        with web.lock:
            hits = dict(web.hits)
        with open(os.path.join(state, PLACEMENT)) as fh:
            after_loss = json.load(fh)
        rows = crawl.pages()
        urls = set(rows.column("url").to_pylist())
        warc_rows = check_every_row_has_its_records(crawl, web)
        unlogged = sorted(urls - logged_urls(out, os.path.dirname(state), 2))
        print("RESULT " + json.dumps({
            "phase": str(stats["phase"]), "reason": stats.get("reason", ""),
            "rollbacks": stats["rollbacks"], "lost": lost, "crawl_id": crawl.crawl_id,
            "fetched_at_loss": fetched_at_loss,
            "rollback_fetched": rollback.fetched if rollback else None,
            "hits_at_rollback": timeline.at(rollback.at) if rollback else None,
            "moved_to_live_nodes": all(after_loss[w] != victim.node_id for w in lost),
            "reachable": sorted(web.reachable()),
            "repeats": sum(n - 1 for n in hits.values()),
            "nodes": sorted({w.get("node", "") for w in stats["db_workers"]}),
            "spools_lost": spools_lost, "fetchers_lost": len(fetchers),
            "warc_rows": warc_rows, "without_status": rows.column("status").null_count,
            "unlogged": unlogged[:10]}))
    finally:
        web.stop()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
