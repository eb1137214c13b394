"""Spider-log files in Frontera's message protocol, for logging and offline replay.

With ``log_streams`` on, each DB worker appends what its fetch workers saw to
``OUT/streams/spider-log-<worker>.<codec>``: ``page_crawled`` or ``request_error`` per fetched
URL, then ``links_extracted`` per page with links, encoded by the codec named in the config.
A file is a sequence of frames, each a 4-byte big-endian length and one encoded message, so it
can be read back with :func:`read_stream` and fed to a strategy with :func:`replay`.

With ``OUT`` on an object store (``s3://...``), a DB worker appends to its file in
``STATE/streams-spool/`` and uploads it whole, replacing the copy in ``OUT/streams/``, when it
drains (a pause, a stop, the end of the crawl), at each of the crawl's checkpoints and when it
closes; a worker restarted after a kill appends to its spooled file again, so the next upload
has everything, and one that finds no spooled file (its node was lost: it was created on
another) starts from the copy in ``OUT/streams/``, which holds all up to the last checkpoint.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from raycrawl.codecs import codec_module
from raycrawl.codecs._common import MAX_MESSAGE_BYTES
from raycrawl.errors import DecodeError
from raycrawl.models import Request, Response
from raycrawl.storage.location import Location, is_local, local_path
from raycrawl.strategy import CrawlingStrategy

_LEN = struct.Struct(">I")


def stream_path(out_dir: str, worker: int, codec: str) -> str:
    return os.path.join(out_dir, "streams", f"spider-log-{worker:03d}.{codec}")


def stream_place(out_dir: str, state_dir: str, worker: int, codec: str
                 ) -> tuple[str, Location | None]:
    """The local file DB worker ``worker`` appends its stream to, and where it is uploaded
    (None: ``OUT`` is on this disk and the file is in it)."""
    if is_local(out_dir):
        return stream_path(local_path(out_dir), worker, codec), None
    name = os.path.basename(stream_path(out_dir, worker, codec))
    return (os.path.join(state_dir, "streams-spool", name),
            Location.of(out_dir).child("streams"))


class StreamWriter:
    """Appends spider-log batches to one stream file as encoded messages (and, with
    ``upload``, copies the file there whole at each :meth:`publish` and at close)."""

    def __init__(self, path: str, codec: str, upload: Location | None = None) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.upload = path, upload
        name = os.path.basename(path)
        if upload is not None and not os.path.exists(path) and upload.exists(name):
            upload.download(name, path)  # a spool lost with its node: what went up stays
        self.encoder = codec_module(codec).Encoder()
        self.file = open(path, "ab")  # noqa: SIM115 - kept open for the worker's lifetime

    def _frame(self, message: bytes) -> None:
        self.file.write(_LEN.pack(len(message)) + message)

    def write_spider_log(self, pages: pa.RecordBatch, links: pa.RecordBatch) -> None:
        enc = self.encoder
        for row in pages.to_pylist():
            meta = {"fingerprint": row["fingerprint"], "depth": row["depth"]}
            if row["status"] is None:
                self._frame(enc.encode_request_error(Request(row["url"], meta=meta),
                                                     row["error"] or "unknown"))
            else:
                headers = {"Content-Type": row["content_type"]} if row["content_type"] else {}
                self._frame(enc.encode_page_crawled(Response(row["url"], row["status"],
                                                             headers=headers, meta=meta)))
        by_parent: dict[str, list[Request]] = {}
        for row in links.to_pylist():
            by_parent.setdefault(row["parent_url"], []).append(
                Request(row["url"], meta={"fingerprint": row["fingerprint"],
                                          "depth": row["depth"]}))
        for parent, found in by_parent.items():
            self._frame(enc.encode_links_extracted(Request(parent), found))
        # To the OS now (fsync'd at drains): a worker killed later loses none of it.  Written
        # before its batch completes, so a kill before that logs the batch's refetch again.
        self.file.flush()

    def flush(self) -> int:
        """Make what is written durable; returns the file's length (whole frames, when called
        on the thread that writes them)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.file.tell()

    def publish(self, length: int | None = None) -> None:
        """Make everything written so far durable, and visible in ``OUT/streams``; with
        ``length`` (of a :meth:`flush` on the writing thread), that much of it, from another
        thread while the frames go on."""
        if length is None:
            self.flush()
        if self.upload is not None:
            self.upload.upload(self.path, os.path.basename(self.path), length)

    def close(self) -> None:
        self.publish()
        self.file.close()


def read_stream(path: str, codec: str,
                max_message_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[tuple[Any, ...]]:
    """Decoded messages of a stream file, in order.  A torn or oversized frame raises
    :class:`DecodeError` after the messages before it were yielded."""
    decoder = codec_module(codec).Decoder(max_message_bytes=max_message_bytes)
    folder, name = path.rsplit("/", 1)
    with (open(path, "rb") if is_local(path)
          else io.BytesIO(Location.of(folder).read(name) or b"")) as fh:
        while header := fh.read(_LEN.size):
            if len(header) < _LEN.size:
                raise DecodeError(f"{path}: torn frame header at offset {fh.tell() - len(header)}")
            (size,) = _LEN.unpack(header)
            if size > max_message_bytes:
                raise DecodeError(f"{path}: frame of {size} bytes exceeds the limit")
            message = fh.read(size)
            if len(message) < size:
                raise DecodeError(f"{path}: torn frame at the end of the file")
            yield decoder.decode(message)


def replay(path: str, codec: str, strategy: CrawlingStrategy) -> int:
    """Feed a spider-log stream to a strategy, offline; returns the messages replayed."""
    count = 0
    for message in read_stream(path, codec):
        kind = message[0]
        if kind == "page_crawled":
            strategy.page_crawled(message[1])
        elif kind == "request_error":
            strategy.request_error(message[1], message[2])
        elif kind == "links_extracted":
            strategy.links_extracted(message[1], message[2])
        count += 1
    return count
