"""Many machines for real: a cluster of a head and two worker nodes on this machine, output on
an S3-compatible server on loopback, node-local stores, and a worker node lost mid-crawl with
its disk (``tests/cluster_crawl.py``, run in a process of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raycrawl.output.durable import read_pages
from tests import s3server
from tests.test_faults import IN_FLIGHT

pytestmark = pytest.mark.ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(900)
def test_a_lost_node_is_survived_with_every_page_once_in_s3(s3, tmp_path):
    out = f"s3://{s3.bucket()}/crawl"
    env = {**os.environ, **s3server.ENV, "PYTHONPATH": ROOT}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cluster_crawl.py"), out,
                          str(tmp_path / "state"), "1000"],
                         capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-5000:]
    result = json.loads(next(line for line in run.stdout.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    assert result["phase"] == "finished", result["reason"]
    assert result["rollbacks"] == 1 and result["moved_to_live_nodes"], result
    assert "db-worker-1" in result["lost"] and len(result["lost"]) == 2, result
    urls = read_pages(f"{out}/pages").column("url").to_pylist()
    assert len(urls) >= 900
    assert len(urls) == len(set(urls)), "a URL has two rows"
    assert sorted(urls) == result["reachable"], "a reachable URL is missing"
    assert result["rollback_fetched"] >= len(urls) // 3, "the checkpoint held no work"
    # What the lost node had spooled went with it: WARC files of its fetch workers and the
    # stream of its DB worker.  Every row still points at its WARC records (each checkpoint
    # uploads them first) and is in a stream (a DB worker without its spool goes on from
    # the copy in OUT, up to date at the checkpoint).
    assert result["spools_lost"] >= 1, result
    assert result["warc_rows"] == len(urls) - result["without_status"], result
    assert result["unlogged"] == [], result
    # What is fetched again is what was fetched after the checkpoint: until the rollback, not
    # the loss (the other workers fetch on until Ray notices the node is gone), plus batches
    # in flight.
    since = result["hits_at_rollback"] - result["rollback_fetched"]
    assert since >= result["fetched_at_loss"] - result["rollback_fetched"], result
    assert result["repeats"] <= since + 2 * IN_FLIGHT, result

    shown = subprocess.run([sys.executable, "-m", "raycrawl", "status", "--out", out],
                           capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    assert f"crawl {result['crawl_id']}" in shown.stdout and "finished" in shown.stdout
    assert "rolled back 1 time" in shown.stdout


@pytest.mark.timeout(600)
def test_a_crawl_asks_the_autoscaler_for_cpus_and_gives_them_back(tmp_path):
    """Ray's fake multi-node autoscaler (``tests/autoscale_crawl.py``): a head of 1 CPU and up
    to two 1-CPU fetch nodes.  With ``max_fetch_workers=3`` and more ready work than one
    fetch worker, the crawl asks for CPUs, the cluster grows and the crawl fetches on them;
    as the work drains it asks for none, and the idle nodes are removed."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "autoscale_crawl.py"),
                          str(out), str(tmp_path)],
                         capture_output=True, text=True, timeout=540, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-5000:]
    result = json.loads(next(line for line in run.stdout.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    assert result["phase"] == "finished", result["reason"]
    assert result["most_cpus"] == 3 and result["most_fetch_workers"] == 3, result
    assert result["requested_at_end"] == 0 and result["cpus_when_idle"] == 1, result
    urls = read_pages(str(out / "pages")).column("url").to_pylist()
    assert len(urls) == len(set(urls)) == result["fetched"]
