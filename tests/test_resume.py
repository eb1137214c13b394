"""A killed driver and a changing cluster, in processes of their own (each its own Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from raycrawl.output.durable import read_pages
from tests.test_faults import IN_FLIGHT, slow_web

pytestmark = pytest.mark.ray

# A delay per host stretches the crawl over seconds: status.json is written once a second, and
# the crawl must still be running when the driver sees 30% of it fetched and is killed.
FLAGS = ["--delay", "0.1", "--allow-network", "127.0.0.0/8", "--no-robots", "--db-workers", "2",
         "--strategy-workers", "2", "--partitions", "8", "--quiet"]


def child_env() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return env


def fetched_so_far(state) -> int:
    try:
        return json.loads((state / "status.json").read_text())["fetched"]
    except (OSError, ValueError, KeyError):
        return 0


def check(web, out) -> None:
    urls = read_pages(str(out / "pages")).column("url").to_pylist()
    assert len(urls) == len(set(urls)), "a URL has two rows"
    assert set(urls) == set(web.reachable()), "a reachable URL is missing"
    with web.lock:
        hits = dict(web.hits)
    assert max(hits.values()) <= 2 and sum(n - 1 for n in hits.values()) <= IN_FLIGHT


def test_driver_killed_with_its_ray_then_resumed_on_a_fresh_ray(tmp_path):
    web = slow_web(seed=43)
    out, state = tmp_path / "out", tmp_path / "out" / "state"
    config = tmp_path / "c.toml"
    config.write_text("retries = 0\nbatch_size = 16\nhost_batch_cap = 4\npoll_interval_s = 0.05\n"
                      "batches_in_flight = 2\n")  # as in test_faults, so IN_FLIGHT holds
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "raycrawl.cli", "crawl", web.seed_url, "--out", str(out),
             "--address", "local", "--config", str(config), *FLAGS],
            env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while fetched_so_far(state) < 0.3 * len(web.reachable()):
            assert driver.poll() is None, "the crawl ended before it could be killed"
            assert time.monotonic() < deadline, "the crawl did not get going"
            time.sleep(0.1)
        # The driver, its local Ray (GCS, raylet) and every worker: gone at once.
        family = psutil.Process(driver.pid).children(recursive=True)
        os.killpg(driver.pid, signal.SIGKILL)
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        driver.wait(timeout=30)
        psutil.wait_procs(family, timeout=30)
        assert fetched_so_far(state) < len(web.reachable())
        resumed = subprocess.run(
            [sys.executable, "-m", "raycrawl.cli", "resume", "--state", str(state),
             "--address", "local", "--quiet"],
            env=child_env(), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "finished" in resumed.stdout
        check(web, out)
    finally:
        web.stop()


CLUSTER_SCRIPT = textwrap.dedent("""
    import sys, time
    import ray
    from ray.cluster_utils import Cluster
    from raycrawl import Crawl
    from tests.cluster_crawl import HEAD_NODE_ARGS
    from tests.test_faults import SETTINGS, slow_web

    cluster = Cluster(initialize_head=True, head_node_args=HEAD_NODE_ARGS)
    node = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="raycrawl")
    web = slow_web(seed=47)
    crawl = Crawl(seeds=[web.seed_url], out=sys.argv[1], **SETTINGS).start()
    while crawl.stats()["fetched"] < 0.3 * len(web.reachable()):
        time.sleep(0.05)
    cluster.remove_node(node)           # its actors and tasks die with it
    cluster.add_node(num_cpus=1)
    stats = crawl.wait(timeout=240, interval_s=0.2)
    print("PHASE", stats["phase"])
    print("HITS", max(web.hits.values()), sum(n - 1 for n in web.hits.values()))
    print("EXPECTED", len(web.reachable()))
    web.stop()
    ray.shutdown()
    cluster.shutdown()
""")


def test_node_removed_and_added_back(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", CLUSTER_SCRIPT, str(out)], env=child_env(),
                         capture_output=True, text=True, timeout=420,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    assert lines["PHASE"] == "finished"
    most, repeats = map(int, lines["HITS"].split())
    assert most <= 2 and repeats <= IN_FLIGHT
    urls = read_pages(str(out / "pages")).column("url").to_pylist()
    assert len(urls) == len(set(urls)) == int(lines["EXPECTED"])
