"""Between actor processes: record batches as Arrow IPC streams (actors.wire), carried inside
the calls of a Ray that raycrawl starts (actors.handles.INLINE_BYTES)."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime
from unittest import mock

import pyarrow as pa
import pytest

from actors import wire
from actors.handles import INLINE_BYTES


def _batches() -> dict[str, pa.RecordBatch]:
    links = pa.RecordBatch.from_pydict({
        "url": [f"http://127.0.0.1:8000/p/{i}" for i in range(50)],
        "fingerprint": pa.array(range(50), type=pa.uint64()),
        "chain": [[f"http://127.0.0.1:8000/r/{i}"] * (i % 3) for i in range(50)],
        "meta": [None if i % 2 else b"\x81\xa1k\x01" for i in range(50)],
        "at": pa.array([datetime(2026, 12, 7, tzinfo=UTC)] * 50, type=pa.timestamp("us", "UTC")),
    })
    hosts = pa.array(["a", "b", "a", None]).dictionary_encode()
    return {
        "links": links,
        "sliced": links.slice(10, 5),
        "dictionary": pa.RecordBatch.from_arrays([hosts], names=["host"]),
        "empty": links.slice(0, 0),
        "no columns": pa.RecordBatch.from_arrays([], names=[]),
    }


@pytest.mark.parametrize("kind", list(_batches()))
def test_a_batch_comes_back_as_it_went(kind):
    batch = _batches()[kind]
    back = wire.read_batch(wire.write_batch(batch))
    assert back.schema == batch.schema
    assert back.equals(batch)
    assert back.to_pylist() == batch.to_pylist()


def test_a_slice_sends_its_own_rows_only():
    links = _batches()["links"]
    assert wire.write_batch(links.slice(10, 5)).size < wire.write_batch(links).size / 3


def test_the_stream_pickles_out_of_band_so_the_receiver_reads_it_in_place():
    stream = wire.write_batch(_batches()["links"])
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps((wire.read_batch, (stream,)), protocol=5,
                        buffer_callback=buffers.append)
    assert buffers and len(data) < 200  # the body is not in the pickle itself
    read, args = pickle.loads(data, buffers=buffers)
    assert read(*args).equals(_batches()["links"])


def test_every_actor_process_sends_batches_as_streams(ray_session):
    import ray

    @ray.remote(num_cpus=0)
    def in_an_actor_process():
        from ray import cloudpickle

        import actors  # noqa: F401  (as an actor's class, unpickled there, imports it)

        batch = _batches()["links"]
        reducer = cloudpickle.CloudPickler.dispatch.get(pa.RecordBatch)
        assert reducer is not None, "no reducer for record batches in an actor process"
        read, _ = reducer(batch)
        return read.__qualname__, batch.slice(10, 5)

    name, batch = ray.get(in_an_actor_process.remote(), timeout=60)
    assert name == "read_batch"
    assert batch.equals(_batches()["sliced"])


@pytest.mark.parametrize(("address", "ray_address", "user", "expected"), [
    (None, None, None, str(INLINE_BYTES)),  # raycrawl starts Ray: calls carry up to 256 KiB
    ("local", "10.0.0.1:6379", None, str(INLINE_BYTES)),  # "local": a new Ray whatever is set
    (None, None, "65536", "65536"),  # the user's own setting wins
    (None, "10.0.0.1:6379", None, None),  # joining a cluster: its own settings
    ("ray://10.0.0.1:10001", None, None, None),
])
def test_a_ray_that_raycrawl_starts_carries_spider_logs_inside_its_calls(
        monkeypatch, address, ray_address, user, expected):
    import ray

    from actors import handles

    seen = {}
    name = "RAY_max_direct_call_object_size"
    for var, value in (("RAY_ADDRESS", ray_address), (name, user)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(handles.socket, "create_connection", lambda *a: mock.Mock())
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(env=os.environ.get(name)))
    handles.connect(address)
    assert seen["env"] == expected
    assert os.environ.get(name) == user  # the driver's environment is left as it was
