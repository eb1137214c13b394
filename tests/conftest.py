"""Fixtures: one local Ray for the whole session, synthetic webs on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from raycrawl.formats.storage import Store
from raycrawl.testing.synthweb import SyntheticWeb


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """A local Ray (2 CPUs, no dashboard) shared by every integration test; yields its
    address so CLI tests in subprocesses can join it."""
    import ray

    from actors.options import NAMESPACE

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ctx = ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE,
                   logging_level="WARNING")
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """An empty RocksDB store, closed after the test."""
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


@pytest.fixture
def web() -> Iterator[SyntheticWeb]:
    """8 hosts x 25 pages with every kind of special page."""
    w = SyntheticWeb(hosts=8, pages_per_host=25, seed=7).start()
    yield w
    w.stop()
