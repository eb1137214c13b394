"""Record batches between raycrawl's actor processes travel as Arrow IPC streams (actors.wire)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from actors import wire


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
