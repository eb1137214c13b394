"""Frontera's message protocol as JSON (one object per message, bodies in base64).

Layout::

    request   = {"url", "method", "headers", "cookies", "meta"}
    {"type": "add_seeds", "seeds": [request, ...]}
    {"type": "page_crawled", "r": {"url", "status_code", "meta", "headers", "body"}}
    {"type": "links_extracted", "r": request, "links": [request, ...]}
    {"type": "request_error", "r": request, "error": str}
    {"type": "update_score", "r": request, "score": float, "schedule": bool}
    {"type": "new_job_id", "job_id": int}
    {"type": "offset", "partition_id": int, "offset": int}
    {"type": "stats", "stats": {...}}
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from raycrawl.codecs import _common as c
from raycrawl.errors import DecodeError
from raycrawl.models import Request, Response

__all__ = ["Decoder", "Encoder"]


def _request(r: Request) -> dict[str, Any]:
    return {"url": r.url, "method": r.method, "headers": r.headers, "cookies": r.cookies,
            "meta": r.meta}


class Encoder:
    """Encodes Frontera messages as UTF-8 JSON; ``send_body`` includes response bodies."""

    def __init__(self, send_body: bool = False) -> None:
        self.send_body = send_body

    def _dump(self, obj: dict[str, Any]) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"value cannot be encoded as JSON: {exc}") from None

    def encode_add_seeds(self, seeds: list[Request]) -> bytes:
        return self._dump({"type": "add_seeds", "seeds": [_request(s) for s in seeds]})

    def encode_page_crawled(self, response: Response) -> bytes:
        meta = response.meta or (response.request.meta if response.request else {})
        body = base64.b64encode(response.body).decode("ascii") if self.send_body else None
        return self._dump({"type": "page_crawled", "r": {
            "url": response.url, "status_code": response.status_code, "meta": meta,
            "headers": response.headers, "body": body}})

    def encode_links_extracted(self, request: Request, links: list[Request]) -> bytes:
        return self._dump({"type": "links_extracted", "r": _request(request),
                           "links": [_request(link) for link in links]})

    def encode_request_error(self, request: Request, error: str) -> bytes:
        return self._dump({"type": "request_error", "r": _request(request), "error": str(error)})

    def encode_request(self, request: Request) -> bytes:
        return self._dump(_request(request))

    def encode_update_score(self, request: Request, score: float, schedule: bool) -> bytes:
        return self._dump({"type": "update_score", "r": _request(request),
                           "score": float(score), "schedule": bool(schedule)})

    def encode_new_job_id(self, job_id: int) -> bytes:
        return self._dump({"type": "new_job_id", "job_id": int(job_id)})

    def encode_offset(self, partition_id: int, offset: int) -> bytes:
        return self._dump({"type": "offset", "partition_id": int(partition_id),
                           "offset": int(offset)})

    def encode_stats(self, stats: dict[str, Any]) -> bytes:
        return self._dump({"type": "stats", "stats": stats})


def _field(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise DecodeError(f"{what}: missing field {key!r}")
    return obj[key]


def _req(obj: Any) -> Request:
    if not isinstance(obj, dict):
        raise DecodeError("request: expected an object")
    return c.request(_field(obj, "url", "request"), obj.get("method"), obj.get("headers"),
                     obj.get("cookies"), obj.get("meta"))


def _reqs(obj: Any, what: str) -> list[Request]:
    if not isinstance(obj, list):
        raise DecodeError(f"{what}: expected an array of requests")
    return [_req(x) for x in obj]


class Decoder:
    """Decodes JSON messages; anything malformed raises :class:`DecodeError`."""

    def __init__(self, max_message_bytes: int = c.MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes

    def _load(self, buffer: bytes | str) -> Any:
        if not isinstance(buffer, (bytes, bytearray, str)):
            raise DecodeError(f"expected bytes, got {type(buffer).__name__}")
        c.check_size(buffer, self.max_message_bytes)
        try:
            return json.loads(buffer)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"malformed JSON message: {exc}") from None

    def decode(self, buffer: bytes | str) -> tuple[Any, ...]:
        msg = self._load(buffer)
        if not isinstance(msg, dict):
            raise DecodeError("expected a JSON object with a 'type'")
        kind = msg.get("type")
        if kind == "page_crawled":
            r = _field(msg, "r", kind)
            if not isinstance(r, dict):
                raise DecodeError("page_crawled: 'r' must be an object")
            body = r.get("body")
            try:
                raw = base64.b64decode(body, validate=True) if body is not None else b""
            except (binascii.Error, TypeError, ValueError):
                raise DecodeError("page_crawled: body is not base64") from None
            return ("page_crawled", c.response(_field(r, "url", kind), r.get("status_code"),
                                               r.get("meta"), r.get("headers"), raw))
        if kind == "links_extracted":
            return (kind, _req(_field(msg, "r", kind)), _reqs(_field(msg, "links", kind), "links"))
        if kind == "request_error":
            return (kind, _req(_field(msg, "r", kind)), c.text(_field(msg, "error", kind), "error"))
        if kind == "update_score":
            return (kind, _req(_field(msg, "r", kind)),
                    c.number(_field(msg, "score", kind), "score"),
                    bool(_field(msg, "schedule", kind)))
        if kind == "add_seeds":
            return (kind, _reqs(_field(msg, "seeds", kind), "seeds"))
        if kind == "new_job_id":
            return (kind, c.integer(_field(msg, "job_id", kind), "job id"))
        if kind == "offset":
            return (kind, c.integer(_field(msg, "partition_id", kind), "partition id"),
                    c.integer(_field(msg, "offset", kind), "offset"))
        if kind == "stats":
            stats = _field(msg, "stats", kind)
            if not isinstance(stats, dict):
                raise DecodeError("stats: expected an object")
            return (kind, stats)
        raise DecodeError(f"unknown message type {kind!r}")

    def decode_request(self, buffer: bytes | str) -> Request:
        return _req(self._load(buffer))
