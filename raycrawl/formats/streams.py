"""Spider-log files in Frontera's message protocol, for logging and offline replay.

With ``log_streams`` on, each DB worker appends what its fetch workers saw to
``OUT/streams/spider-log-<worker>.<codec>``: ``page_crawled`` or ``request_error`` per fetched
URL, then ``links_extracted`` per page with links, encoded by the codec named in the config.
A file is a sequence of frames, each a 4-byte big-endian length and one encoded message, so it
can be read back with :func:`read_stream` and fed to a strategy with :func:`replay`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from raycrawl.codecs import codec_module
from raycrawl.codecs._common import MAX_MESSAGE_BYTES
from raycrawl.errors import DecodeError
from raycrawl.models import Request, Response
from raycrawl.strategy import CrawlingStrategy

_LEN = struct.Struct(">I")


def stream_path(out_dir: str, worker: int, codec: str) -> str:
    return os.path.join(out_dir, "streams", f"spider-log-{worker:03d}.{codec}")


class StreamWriter:
    """Appends spider-log batches to one stream file as encoded messages."""

    def __init__(self, path: str, codec: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
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

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.flush()
        self.file.close()


def read_stream(path: str, codec: str,
                max_message_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[tuple[Any, ...]]:
    """Decoded messages of a stream file, in order.  A torn or oversized frame raises
    :class:`DecodeError` after the messages before it were yielded."""
    decoder = codec_module(codec).Decoder(max_message_bytes=max_message_bytes)
    with open(path, "rb") as fh:
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
