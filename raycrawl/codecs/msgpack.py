"""Frontera's msgpack wire protocol.

Layout (Frontera 0.8; ``add_seeds`` as Frontera 0.7 wrote it)::

    request   = [url, method, headers, cookies, meta]
    response  = [url, status_code, meta, headers, body]
    [b'as', [request, ...]]                add_seeds
    [b'pc', response]                      page_crawled
    [b'le', request, [request, ...]]       links_extracted
    [b're', request, error]                request_error
    [b'us', request, score, schedule]      update_score
    [b'njid', job_id]                      new_job_id
    [b'of', partition_id, offset]          offset
    [b'st', stats]                         stats
    request                                a spider-feed request (decode_request)
"""

from __future__ import annotations

from typing import Any

import msgpack

from raycrawl.codecs import _common as c
from raycrawl.errors import DecodeError
from raycrawl.models import Request, Response

__all__ = ["Decoder", "Encoder"]


def _request(r: Request) -> list[Any]:
    return [r.url, r.method, r.headers, r.cookies, r.meta]


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"value cannot be encoded as msgpack: {exc}") from None


class Encoder:
    """Encodes Frontera messages; ``send_body`` includes response bodies in page_crawled."""

    def __init__(self, send_body: bool = False) -> None:
        self.send_body = send_body

    def encode_add_seeds(self, seeds: list[Request]) -> bytes:
        return _pack([b"as", [_request(s) for s in seeds]])

    def encode_page_crawled(self, response: Response) -> bytes:
        meta = response.meta or (response.request.meta if response.request else {})
        return _pack([b"pc", [response.url, response.status_code, meta, response.headers,
                              response.body if self.send_body else None]])

    def encode_links_extracted(self, request: Request, links: list[Request]) -> bytes:
        return _pack([b"le", _request(request), [_request(link) for link in links]])

    def encode_request_error(self, request: Request, error: str) -> bytes:
        return _pack([b"re", _request(request), str(error)])

    def encode_request(self, request: Request) -> bytes:
        return _pack(_request(request))

    def encode_update_score(self, request: Request, score: float, schedule: bool) -> bytes:
        return _pack([b"us", _request(request), float(score), bool(schedule)])

    def encode_new_job_id(self, job_id: int) -> bytes:
        return _pack([b"njid", int(job_id)])

    def encode_offset(self, partition_id: int, offset: int) -> bytes:
        return _pack([b"of", int(partition_id), int(offset)])

    def encode_stats(self, stats: dict[str, Any]) -> bytes:
        return _pack([b"st", stats])


def _req(obj: Any) -> Request:
    if not isinstance(obj, (list, tuple)) or len(obj) != 5:
        raise DecodeError("request: expected [url, method, headers, cookies, meta]")
    return c.request(*obj)


def _reqs(obj: Any, what: str) -> list[Request]:
    if not isinstance(obj, (list, tuple)):
        raise DecodeError(f"{what}: expected an array of requests")
    return [_req(x) for x in obj]


class Decoder:
    """Decodes Frontera msgpack messages; anything malformed raises :class:`DecodeError`."""

    def __init__(self, max_message_bytes: int = c.MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes

    def _unpack(self, buffer: bytes) -> Any:
        if not isinstance(buffer, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(buffer).__name__}")
        c.check_size(buffer, self.max_message_bytes)
        try:
            return msgpack.unpackb(
                buffer, raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                max_str_len=self.max_message_bytes, max_bin_len=self.max_message_bytes,
                max_array_len=c.MAX_ITEMS, max_map_len=c.MAX_MAP_ITEMS, max_ext_len=0)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise DecodeError(f"malformed msgpack message: {exc}") from None

    def decode(self, buffer: bytes) -> tuple[Any, ...]:
        obj = self._unpack(buffer)
        if not isinstance(obj, (list, tuple)) or not obj:
            raise DecodeError("expected a tagged message array")
        tag = obj[0].encode() if isinstance(obj[0], str) else obj[0]
        try:
            return self._dispatch(tag, list(obj))
        except (IndexError, TypeError) as exc:
            raise DecodeError(f"malformed {tag!r} message: {exc}") from None

    def _dispatch(self, tag: Any, obj: list[Any]) -> tuple[Any, ...]:
        if tag == b"pc":
            body = obj[1]
            if not isinstance(body, (list, tuple)) or len(body) != 5:
                raise DecodeError("page_crawled: expected [url, status, meta, headers, body]")
            return ("page_crawled", c.response(*body))
        if tag == b"le":
            return ("links_extracted", _req(obj[1]), _reqs(obj[2], "links"))
        if tag == b"re":
            return ("request_error", _req(obj[1]), c.text(obj[2], "error"))
        if tag == b"us":
            return ("update_score", _req(obj[1]), c.number(obj[2], "score"), bool(obj[3]))
        if tag == b"as":
            return ("add_seeds", _reqs(obj[1], "seeds"))
        if tag == b"njid":
            return ("new_job_id", c.integer(obj[1], "job id"))
        if tag == b"of":
            return ("offset", c.integer(obj[1], "partition id"), c.integer(obj[2], "offset"))
        if tag == b"st":
            if not isinstance(obj[1], dict):
                raise DecodeError("stats: expected a map")
            return ("stats", c.meta_map(obj[1], "stats"))
        raise DecodeError(f"unknown message type {tag!r}")

    def decode_request(self, buffer: bytes) -> Request:
        return _req(self._unpack(buffer))
