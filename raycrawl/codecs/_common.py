"""What both codecs share: message names, limits and value normalisation.

A decoded message is a tuple whose first item names its type, as Frontera's decoders return:

=================  ==========================================
``add_seeds``      ``('add_seeds', [Request, ...])``
``page_crawled``   ``('page_crawled', Response)``
``links_extracted``  ``('links_extracted', Request, [Request, ...])``
``request_error``  ``('request_error', Request, str)``
``update_score``   ``('update_score', Request, float, bool)``
``new_job_id``     ``('new_job_id', int)``
``offset``         ``('offset', int, int)``
``stats``          ``('stats', dict)``
=================  ==========================================
"""

from __future__ import annotations

from typing import Any

from raycrawl.errors import DecodeError
from raycrawl.models import Request, Response

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_ITEMS = 1_000_000  # longest array (links, seeds) a message may hold
MAX_MAP_ITEMS = 100_000  # largest headers/meta/stats map


def text(value: Any, what: str) -> str:
    """A str from a str or UTF-8 bytes; anything else is a :class:`DecodeError`."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise DecodeError(f"{what}: expected a string, got {type(value).__name__}")


def binary(value: Any, what: str) -> bytes:
    """Bytes from bytes, or from a str written by an encoder without a bin type."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise DecodeError(f"{what}: expected bytes, got {type(value).__name__}")


def str_map(value: Any, what: str) -> dict[str, str]:
    """Headers or cookies as ``str -> str`` (Frontera wrote them as bytes)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{what}: expected a map, got {type(value).__name__}")
    return {text(k, what): text(v, what) if not isinstance(v, list) else
            ", ".join(text(x, what) for x in v) for k, v in value.items()}


def meta_map(value: Any, what: str) -> dict[str, Any]:
    """``meta`` with its keys as str (Frontera used bytes keys); values are kept as decoded."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{what}: expected a map, got {type(value).__name__}")
    return {text(k, what) if isinstance(k, (str, bytes)) else k: v for k, v in value.items()}


def request(url: Any, method: Any, headers: Any, cookies: Any, meta: Any) -> Request:
    return Request(url=text(url, "request url"),
                   method=text(method, "request method") if method is not None else "GET",
                   headers=str_map(headers, "request headers"),
                   cookies=str_map(cookies, "request cookies"),
                   meta=meta_map(meta, "request meta"))


def response(url: Any, status: Any, meta: Any, headers: Any, body: Any) -> Response:
    if not isinstance(status, int) or isinstance(status, bool):
        raise DecodeError(f"response status: expected an integer, got {status!r}")
    link = text(url, "response url")
    meta_d = meta_map(meta, "response meta")
    return Response(url=link, status_code=status, headers=str_map(headers, "response headers"),
                    body=binary(body, "response body"), meta=meta_d,
                    request=Request(url=link, meta=meta_d))


def check_size(buffer: bytes | str, limit: int) -> None:
    if len(buffer) > limit:
        raise DecodeError(f"message of {len(buffer)} bytes exceeds the {limit}-byte limit")


def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{what}: expected a number, got {value!r}")
    return float(value)


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}: expected an integer, got {value!r}")
    return value
