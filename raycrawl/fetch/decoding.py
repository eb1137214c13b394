"""Content-Encoding decoding with a cap on the decoded size, chunk by chunk.

The fetcher asks servers for ``gzip`` and ``deflate`` only and decodes them itself, so a
decompression bomb stops as soon as its output passes the cap instead of after inflating a
whole network chunk.  Another encoding the server sends anyway is refused
(:class:`UnsupportedEncoding`) rather than parsed as garbage.
"""

from __future__ import annotations

import zlib

ACCEPT_ENCODING = "gzip, deflate"


class UnsupportedEncoding(ValueError):
    """The response uses a Content-Encoding the fetcher does not decode."""


class BodyDecoder:
    """Feeds raw body chunks, returns decoded bytes; never yields more than ``limit + 1``."""

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise UnsupportedEncoding(f"unsupported Content-Encoding: {content_encoding}")
        self.coding = codings[0] if codings else None
        self.limit = limit
        self.produced = 0
        self.raw_deflate = False
        self.z = self._new()

    def _new(self) -> zlib._Decompress | None:
        if self.coding is None:
            return None
        if self.coding == "deflate":
            return zlib.decompressobj(-zlib.MAX_WBITS if self.raw_deflate else zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> bytes:
        """Decoded bytes of ``chunk``; stops once more than ``limit`` bytes were produced."""
        if self.z is None:
            out = chunk[: self.limit + 1 - self.produced]
        else:
            room = self.limit + 1 - self.produced
            try:
                out = self.z.decompress(chunk, room)
            except zlib.error:
                if self.coding == "deflate" and not self.raw_deflate and self.produced == 0:
                    self.raw_deflate = True  # servers send raw deflate more often than zlib
                    self.z = self._new()
                    return self.feed(chunk)
                raise
        self.produced += len(out)
        return out

    @property
    def over_limit(self) -> bool:
        return self.produced > self.limit
