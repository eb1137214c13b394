"""A crawl that asks the cluster's autoscaler for CPUs: run by ``tests/test_many_machines.py``
in a process of its own.  The cluster is a ``ray start --head`` with Ray's fake multi-node
provider (``RAY_FAKE_CLUSTER``: each node it launches is a raylet on this machine), started
here as ``ray.cluster_utils.AutoscalingCluster`` would, but without its ``ray stop`` (which
would end every Ray of the machine; and its example config is not in Ray's wheel), and ended
by killing its processes: a head of 1 CPU, a ``fetch`` node type of 1 CPU, at most 2, idle
ones removed after 6 s.  A crawl with ``max_fetch_workers=3`` runs on it.  Prints one line,
``RESULT {...}``: the most CPUs the cluster had while it crawled, the most fetch workers the
crawl held, what the autoscaler was asked for at the end, and the CPUs once idle.

    python tests/autoscale_crawl.py OUT WORKDIR
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import ray

from raycrawl import Crawl
from raycrawl.testing.synthweb import SyntheticWeb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster(work: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    ip = ray._private.services.get_node_ip_address()
    # Ray's fake multi-node provider (its example config is not in the wheel: written here).
    config = {
        "cluster_name": "raycrawl-autoscaling", "max_workers": 2,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "fetch": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0,
                      "max_workers": 2}},
        "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1, "docker": {}, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": []}
    config["provider"]["gcs_address"] = f"{ip}:{port}"
    path = os.path.join(work, "autoscaling.json")
    with open(path, "w") as fh:
        json.dump(config, fh)
    temp = tempfile.mkdtemp(prefix="as-", dir="/tmp")  # (Ray's socket paths must be short)
    env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
    head = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
         f"--port={port}", "--num-cpus=1", f"--autoscaling-config={path}",
         f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=open(os.path.join(work, "head.log"), "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.monotonic() + 120
    while True:  # its GCS takes connections
        assert head.poll() is None, f"ray start exited: see {work}/head.log"
        assert time.monotonic() < deadline, "the autoscaling cluster did not come up"
        try:
            socket.create_connection((ip, port), 1).close()
            break
        except OSError:
            time.sleep(0.5)
    return head, f"{ip}:{port}", temp


def stop_cluster(head: subprocess.Popen[bytes], temp: str) -> None:
    """End the head's processes and every node it launched (all name ``temp`` in their
    command lines), and nothing else: killed at once, as nothing of this cluster is kept (a
    ``ray start --block`` sent SIGTERM was still running 20 s later, every run)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in part for part in proc.info["cmdline"] or ()):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=10)


def cpus() -> int:
    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]))


def main(out: str, work: str) -> None:
    head, address, temp = start_cluster(work)
    web = SyntheticWeb(hosts=12, pages_per_host=60, seed=73, latency_s=0.2).start()
    try:
        ray.init(address=address, namespace="raycrawl", logging_level="WARNING")
        crawl = Crawl(seeds=[web.seed_url], out=out, state=os.path.join(work, "state"),
                      delay_s=0.0, retries=0, allow_network=("127.0.0.0/8",), robots=False,
                      max_fetch_workers=3, db_workers=1, strategy_workers=1,
                      batch_size=8).start()
        most_cpus = most_workers = 0
        deadline = time.monotonic() + 400
        while not (stats := crawl.stats())["phase"].terminal:
            assert time.monotonic() < deadline, "the crawl did not end"
            most_cpus = max(most_cpus, cpus())
            most_workers = max(most_workers, sum(w["fetch_workers"] for w in stats["db_workers"]))
            time.sleep(0.5)
        final = crawl.shutdown()
        registry = ray.get_actor("crawl-registry", namespace="raycrawl")
        requested = ray.get(registry.autoscaler_request.remote(), timeout=30)
        deadline = time.monotonic() + 120
        while cpus() > 1 and time.monotonic() < deadline:  # idle nodes go
            time.sleep(1)
        print("RESULT " + json.dumps({
            "phase": str(final["phase"]), "reason": final.get("reason", ""),
            "fetched": final["fetched"], "most_cpus": most_cpus,
            "most_fetch_workers": most_workers, "requested_at_end": requested,
            "cpus_when_idle": cpus()}))
    finally:
        web.stop()
        ray.shutdown()
        stop_cluster(head, temp)


if __name__ == "__main__":
    # As tests/conftest.py's ray start cluster: no token (the driver here is local).
    os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    main(sys.argv[1], sys.argv[2])
