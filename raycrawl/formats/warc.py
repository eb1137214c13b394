"""``OUT/warc/``: every HTTP response of a crawl as WARC/1.1 (``--warc``), laid out by warcio.

Each fetch worker appends to its own files, ``<db-worker>-<fetcher>-<seq>.warc.gz``, starting a
new one past ``warc_max_bytes``; each file opens with a ``warcinfo`` record.  Per response, a
``request`` and a ``response`` record (``WARC-Target-URI`` is the row's canonical URL,
``WARC-Payload-Digest`` and ``WARC-Block-Digest`` in SHA-1, as warcio computes them), each its
own gzip member; the header blocks are warcio's ``StatusAndHeaders``, the records are put
together here (warcio's record builder cost twice the time).  A fetch worker syncs its file
before it hands a host's results back, so a page row committed in ``OUT/pages`` always has its
response record (the row's ``warc_file`` and ``warc_offset`` say where); a batch fetched again
after a fault writes its records again (twice, never missing).  A worker killed mid-write can
leave a partial last member: :func:`repair` cuts it off, so a file always ends with a whole
record.

Bodies are stored as aiohttp hands them over, decoded from any ``Content-Encoding``: that
header moves to ``X-Crawler-Content-Encoding`` and ``Content-Length`` is the stored length, as
readers of the payload expect.  A body cut at ``max_body_bytes`` has ``WARC-Truncated: length``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import threading
import uuid
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from isal import isal_zlib
from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import BufferWARCWriter

from raycrawl.errors import StorageError
from raycrawl.storage.location import Location, is_local, local_path

log = logging.getLogger(__name__)

# Gzip members by ISA-L (python-isal): the same format as zlib's, five times faster at its
# level 1 than zlib's level 1 on a 50 KB page (0.10 vs 0.55 ms) and a little smaller; see
# benchmarks/README.md, step 17.
GZIP_LEVEL = 1
_DROPPED = {"content-encoding", "transfer-encoding", "content-length"}


def _gzip(data: bytes) -> bytes:
    c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _sha1(*parts: bytes, digest: bytes | None = None) -> str:
    """A WARC digest as warcio writes it: ``sha1:`` and the base32 of the SHA-1 (``digest``,
    when the caller has it already)."""
    if digest is None:
        sha1 = hashlib.sha1()
        for part in parts:
            sha1.update(part)
        digest = sha1.digest()
    return "sha1:" + base64.b32encode(digest).decode("ascii")


# The revisit profiles of WARC 1.1: a 304 answer, or a body whose digest is the last visit's.
NOT_MODIFIED = "http://netpreserve.org/warc/1.1/revisit/server-not-modified"
IDENTICAL = "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"


class WarcFiles:
    """The WARC files of one fetch worker: append records, sync, rotate.

    Thread-safe (records are appended one call at a time); a fetch worker calls it on its event
    loop, where a 50 KB page's two records take about 0.2 ms."""

    def __init__(self, warc_dir: str, prefix: str, max_bytes: int, software: str,
                 upload: Location | None = None) -> None:
        os.makedirs(warc_dir, exist_ok=True)
        self.dir, self.prefix, self.max_bytes, self.software = warc_dir, prefix, max_bytes, software
        self.upload = upload
        self.uploading: list[threading.Thread] = []  # files closed by a rotation, going up
        pattern = re.compile(re.escape(prefix) + r"-(\d+)\.warc\.gz$")
        names = os.listdir(warc_dir) + (upload.names() if upload is not None else [])
        self.seq = max((int(m.group(1)) for n in names if (m := pattern.match(n))),
                       default=-1) + 1
        self.fh: io.BufferedWriter | None = None
        self.name = ""
        self.size = 0
        self.dirty = False
        self.lock = threading.Lock()

    def _open(self) -> None:
        self.name = f"{self.prefix}-{self.seq:05d}.warc.gz"
        self.seq += 1
        self.fh = open(os.path.join(self.dir, self.name), "ab")  # noqa: SIM115 (kept open)
        self.size = self.fh.tell()
        writer = BufferWARCWriter(gzip=False, warc_version="1.1")
        info = writer.create_warcinfo_record(self.name, {"software": self.software,
                                                         "format": "WARC File Format 1.1"})
        self._append(_members([info]))

    def _append(self, data: bytes) -> int:
        """Write gzip members (under the lock); returns the offset of the first."""
        if self.fh is None:
            raise ValueError("no WARC file open")
        offset = self.size
        try:
            self.fh.write(data)
        except OSError as exc:
            raise StorageError(f"WARC file {self.name}: {exc}") from None
        self.size += len(data)
        self.dirty = True
        return offset

    def write(self, url: str, method: str, request_headers: list[tuple[str, str]],
              status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
              truncated: str = "", request_body: bytes = b"", digest: bytes | None = None,
              revisit: str | None = None) -> tuple[str, int]:
        """Append a request and its response; returns (file name, offset of the request
        record).  ``truncated`` is the ``WARC-Truncated`` reason when ``body`` is not all of
        it (``length``, ``unspecified``); ``digest`` the body's SHA-1 if known.  With a
        ``revisit`` profile (:data:`NOT_MODIFIED`, :data:`IDENTICAL`) the response is a
        ``revisit`` record: its HTTP headers, no payload.  Durable after the next
        :meth:`sync`."""
        kept = [(k, v) for k, v in headers if k.lower() not in _DROPPED]
        kept += [(f"X-Crawler-{k}", v) for k, v in headers if k.lower() == "content-encoding"]
        kept.append(("Content-Length", str(len(body))))
        http = StatusAndHeaders(f"{status} {reason}".strip(), kept,
                                protocol="HTTP/1.1").to_ascii_bytes()
        response_id = _record_id()
        if revisit is None:
            fields = [("WARC-Payload-Digest", _sha1(body, digest=digest))]
            if truncated:
                fields.append(("WARC-Truncated", truncated))
            response = _record("response", url, response_id, http + body, fields)
        else:
            fields = [("WARC-Profile", revisit), ("WARC-Refers-To-Target-URI", url)]
            if revisit == IDENTICAL:
                fields.append(("WARC-Payload-Digest", _sha1(body, digest=digest)))
            response = _record("revisit", url, response_id, http, fields)
        target = url.split("://", 1)[1]
        path = target[target.find("/"):] if "/" in target else "/"
        asked = StatusAndHeaders(f"{method} {path} HTTP/1.1", request_headers,
                                 is_http_request=True).to_ascii_bytes()
        request = _record("request", url, _record_id(), asked + request_body,
                          [("WARC-Concurrent-To", response_id),
                           ("WARC-Payload-Digest", _sha1(request_body))], kind="request")
        data = _gzip(request) + _gzip(response)
        with self.lock:
            if self.fh is None or self.size >= self.max_bytes:
                self._close()
                self._open()
            return self.name, self._append(data)

    def sync(self) -> None:
        """Make every record written so far durable (raises :class:`StorageError`)."""
        with self.lock:
            self._sync()

    def _sync(self) -> None:
        if self.fh is None or not self.dirty:
            return
        try:
            self.fh.flush()
            os.fdatasync(self.fh.fileno())
        except OSError as exc:
            raise StorageError(f"WARC file {self.name}: {exc}") from None
        self.dirty = False

    def close(self) -> None:
        """Close the open file; with ``upload``, return once every closed file went up (or
        failed to: it stays in the spool, for the next start of this writer)."""
        with self.lock:
            self._close()
        self.wait_uploads()

    def wait_uploads(self) -> None:
        """Return once the files closed so far went up (or stayed in the spool)."""
        with self.lock:  # (a rotation may add one meanwhile: it stays for the next wait)
            threads, self.uploading = self.uploading, []
        for thread in threads:
            thread.join()

    def _close(self) -> None:
        if self.fh is not None:
            self._sync()
            self.fh.close()
            self.fh = None
            if self.upload is not None:  # off the fetch worker's event loop
                self.uploading = [t for t in self.uploading if t.is_alive()]
                thread = threading.Thread(target=_upload_or_keep, name="warc-upload",
                                          args=(self.dir, self.name, self.upload))
                thread.start()
                self.uploading.append(thread)


def _record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def _record(rec_type: str, url: str, record_id: str, block: bytes,
            fields: list[tuple[str, str]], kind: str = "response") -> bytes:
    """One WARC/1.1 record of an HTTP message: its WARC headers (laid out by warcio, as its
    writer does), then ``block`` (the HTTP headers and the payload).  Built here rather than by
    warcio's record builder, which took three quarters of the time of a page's two records
    (benchmarks/README.md, step 19)."""
    warc = StatusAndHeaders("", [
        ("WARC-Type", rec_type), ("WARC-Record-ID", record_id), ("WARC-Target-URI", url),
        ("WARC-Date", datetime_to_iso_date(datetime.now(UTC).replace(tzinfo=None),
                                           use_micros=True)),
        *fields, ("WARC-Block-Digest", _sha1(block)),
        ("Content-Type", f"application/http; msgtype={kind}"),
        ("Content-Length", str(len(block)))], protocol="WARC/1.1")
    return warc.to_bytes() + block + b"\r\n\r\n"


def _members(records: Iterable[Any]) -> bytes:
    """Records serialised by warcio, each compressed as its own gzip member."""
    members = []
    for record in records:
        writer = BufferWARCWriter(gzip=False, warc_version="1.1")
        writer.write_record(record)
        members.append(_gzip(writer.get_contents()))
    return b"".join(members)


def whole_length(path: str) -> int:
    """The length of the file's leading whole gzip members (a partial last one left out)."""
    end = fed = 0  # the end of the last whole member; bytes read
    member = zlib.decompressobj(31)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            while chunk:
                try:
                    member.decompress(chunk)
                except zlib.error:
                    return end
                if not member.eof:
                    fed += len(chunk)
                    break
                fed += len(chunk) - len(member.unused_data)
                end, chunk = fed, member.unused_data
                member = zlib.decompressobj(31)
    return end


def warc_place(warc_dir: str, state_dir: str) -> tuple[str, Location | None]:
    """The local folder the WARC files of ``OUT/warc`` (``warc_dir``) are written in, and
    where each is uploaded once it is closed: ``OUT/warc`` itself on a disk (None: nothing to
    upload), else ``STATE/warc-spool`` on the fetch worker's node."""
    if is_local(warc_dir):
        return local_path(warc_dir), None
    return os.path.join(state_dir, "warc-spool"), Location.of(warc_dir)


def _upload_or_keep(spool: str, name: str, upload: Location) -> None:
    try:
        _upload(spool, name, upload)
    except (StorageError, OSError) as exc:
        log.warning("WARC file %s stays in %s (uploaded at the next start): %s",
                    name, spool, exc)


def _upload(spool: str, name: str, upload: Location) -> None:
    """Move a closed file from the spool to the output (:class:`StorageError` keeps it in
    the spool: the next start of its writer uploads it)."""
    path = os.path.join(spool, name)
    upload.upload(path, name)
    os.remove(path)


def repair(warc_dir: str, prefix: str, upload: Location | None = None) -> int:
    """Cut the partial last record of the files starting with ``prefix`` (left by a worker
    killed mid-write); returns how many files were cut.  With ``upload``, ``warc_dir`` is a
    spool and its files (closed: their writer is gone) are then uploaded there."""
    if not os.path.isdir(warc_dir):
        return 0
    cut = 0
    for name in sorted(os.listdir(warc_dir)):
        if not (name.startswith(prefix) and name.endswith(".warc.gz")):
            continue
        path = os.path.join(warc_dir, name)
        try:
            keep, size = whole_length(path), os.path.getsize(path)
        except FileNotFoundError:  # uploaded by its writer meanwhile
            continue
        if keep < size:
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            cut += 1
        if upload is not None:
            _upload(warc_dir, name, upload)
    return cut
