"""Fixtures: one local Ray for the whole session, synthetic webs on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from unittest import mock

import pytest

from raycrawl.config import CrawlConfig
from raycrawl.storage.store import Store
from raycrawl.strategy_worker.runner import StrategyRunner
from raycrawl.testing import faults
from raycrawl.testing.synthweb import SyntheticWeb
from tests import s3server

# The test files that take longest, longest first (their tests' durations summed over a CI
# run, stop 35: 386 s for the first, 29 s for the last).  scripts/test hands whole files to
# its two workers (--dist loadfile) in collection order; xdist's own order (most tests first)
# sent these files of few long tests last, and one worker ran them alone for the last third
# of the run.  An ordering hint only: a file not named keeps its place after these.
LONGEST_FIRST = ("test_faults.py", "test_on_cluster.py", "test_crawl.py",
                 "test_many_machines.py", "test_scale.py", "test_spiders.py",
                 "test_revisits.py", "test_resume.py", "test_cpu_sharing.py",
                 "test_render_crawl.py", "test_object_store.py", "test_rate.py",
                 "test_safety.py", "test_render.py", "test_requests.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """A local Ray (2 CPUs, no dashboard) shared by every integration test; yields its
    address so CLI tests in subprocesses can join it."""
    import ray

    from actors.options import NAMESPACE

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The workers get the fault hook and the loopback S3 server's address (tests/s3server.py,
    # whether or not a test of this session starts it) from the raylet's environment, which
    # they inherit; the driver does not keep them.  Not through ``runtime_env``: Ray starts
    # every worker of a job that has one through a second Python that imports ray first (its
    # setup_worker), twice the CPU per actor process (benchmarks/actor_start.py), a third of a
    # test crawl's CPU.
    with mock.patch.dict(os.environ, {**faults.ENV_VARS, **s3server.ENV}):
        # "local": a new instance even where a `ray start` cluster runs (the cluster tests
        # own one)
        ctx = ray.init(address="local", num_cpus=2, include_dashboard=False,
                       namespace=NAMESPACE, logging_level="WARNING")
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def s3() -> Iterator[s3server.S3Server]:
    """moto's S3 server on loopback, once per session (``s3.bucket()`` for a fresh bucket)."""
    server = s3server.S3Server()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """An empty RocksDB store, closed after the test."""
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


class Committing(StrategyRunner):
    """Commits after every call, as the strategy worker does once the scoring log is queued."""

    def add_seeds(self, seeds):
        out = super().add_seeds(seeds)
        self.commit()
        return out

    def process_spider_log(self, pages, links):
        out = super().process_spider_log(pages, links)
        self.commit()
        return out


@pytest.fixture
def runner_for(tmp_path):
    """make(runner=Committing, **settings): a strategy runner over a store of its own (4
    partitions, as tests.test_strategy.P)."""
    stores = []

    def make(runner=Committing, **settings):
        store = Store(str(tmp_path / f"sw{len(stores)}"))
        stores.append(store)
        return runner(CrawlConfig(partitions=4, **settings), store)

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def web() -> Iterator[SyntheticWeb]:
    """8 hosts x 25 pages with every kind of special page."""
    w = SyntheticWeb(hosts=8, pages_per_host=25, seed=7).start()
    yield w
    w.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A ``ray start --head`` cluster of its own (2 CPUs, dashboard, Prometheus endpoint), as
    users run one; the tests reach it through subprocesses (CLI, ``ray job submit``, a
    notebook kernel) since the test process is joined to the session's Ray."""

    def __init__(self, tmp: str) -> None:
        self.gcs_port, self.dashboard_port, self.metrics_port = (
            free_port(), free_port(), free_port())
        venv_bin = os.path.dirname(sys.executable)
        # As `ray start` from an activated venv: raycrawl on PATH for jobs.  Metrics every 2 s.
        self.env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "disabled", "RAY_metrics_report_interval_ms": "2000",
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        # The temp dir is short: Ray's socket paths must fit 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
        self.process = subprocess.Popen(
            [os.path.join(venv_bin, "ray"), "start", "--head", "--block", "--num-cpus", "2",
             "--port", str(self.gcs_port), "--include-dashboard", "true",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
             "--metrics-export-port", str(self.metrics_port),
             "--dashboard-agent-listen-port", str(free_port()),
             "--dashboard-agent-grpc-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()),
             "--ray-client-server-port", str(free_port()),
             "--temp-dir", self.temp_dir, "--disable-usage-stats"],
            env=self.env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.client_env = {**self.env, "RAY_ADDRESS": self.address}
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 120.0) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    pass
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                            timeout=2):
                    return
            except OSError:
                time.sleep(1.0)
        raise RuntimeError("the ray start cluster did not come up")

    def stop(self) -> None:
        """End this cluster's processes only (``ray stop`` would end the session's Ray too):
        killed at once, as nothing of it is kept (a ``ray start --block`` sent SIGTERM took
        over 20 s to end in tests/autoscale_crawl.py)."""
        import signal

        try:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """One ``ray start --head`` cluster for every test that needs its own (jobs, metrics,
    notebooks, several crawls, the launcher's script)."""
    cluster = RayCluster(str(tmp_path_factory.mktemp("ray-cluster")))
    yield cluster
    cluster.stop()
