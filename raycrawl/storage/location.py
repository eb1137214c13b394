"""Where a crawl's output lives: a local folder, or a URI of a filesystem pyarrow supports
(``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``, ``file:///...``).

A :class:`Location` is a folder on a ``pyarrow.fs`` filesystem with the few operations the
output needs, each with the same meaning on a disk and on an object store:

- :meth:`Location.put` replaces a file whole: readers see the old content or the new, never a
  part.  On a disk that is a temporary name, fsync and rename; on an object store a single
  upload, which becomes visible only once it is complete (there is no rename there).
- Bytes are bytes: pyarrow's streams would otherwise gunzip a ``.gz`` file as they read it
  (and gzip one as they write it), so ``compression=None`` throughout.
- :meth:`Location.names` lists a folder (empty when it does not exist), :meth:`read` reads a
  file (None when it does not exist), :meth:`delete` removes one (gone already is fine).

S3-compatible stores other than AWS are reached through the standard ``AWS_ENDPOINT_URL``
(``AWS_ENDPOINT_URL_S3`` first), which pyarrow's ``S3FileSystem`` does not read by itself;
credentials and region come from the usual AWS variables and files.  Every error of the
filesystem becomes :class:`StorageError` naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raycrawl.errors import ConfigError, StorageError

T = TypeVar("T")
S3_CONNECT_TIMEOUT_S = 10.0
S3_REQUEST_TIMEOUT_S = 60.0


def is_uri(out: str) -> bool:
    """``out`` names a filesystem by its scheme (``s3://b/p``), not a local path."""
    return "://" in out and len(urlsplit(out).scheme) > 1


def is_local(out: str) -> bool:
    """``out`` is on this machine's disk (a path, or a ``file://`` URI)."""
    return not is_uri(out) or urlsplit(out).scheme == "file"


def local_path(out: str) -> str:
    """The absolute path of a local ``out`` (a path, or a ``file://`` URI)."""
    return os.path.abspath(urlsplit(out).path if is_uri(out) else out)


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@contextlib.contextmanager
def replacing(folder: str, name: str, what: str) -> Iterator[IO[bytes]]:
    """A file to write local ``folder/name`` into, under a temporary name of its own (two
    writers never clobber each other's half-written file), fsync'd and renamed into place,
    the folder fsync'd; if the block raises, nothing is left and ``folder/name`` is as it
    was (an ``OSError`` becomes :class:`StorageError` ``"<what>: <reason>"``)."""
    from raycrawl.storage.store import fsync_dir  # (RocksDB's bindings: not at import)

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise StorageError(f"{what}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(folder, name))
        fsync_dir(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise StorageError(f"{what}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str, endpoint: str | None) -> pafs.FileSystem:
    """The filesystem of ``scheme://netloc`` (made once per process: an S3 filesystem
    resolves credentials when it is made)."""
    try:
        if scheme == "s3":
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            # The AWS SDK gives up on a request after 3 s without a byte (a loaded store, or
            # machine): a crawl's writer waits longer before it calls the output broken.
            options: dict[str, Any] = {"connect_timeout": S3_CONNECT_TIMEOUT_S,
                                       "request_timeout": S3_REQUEST_TIMEOUT_S}
            if endpoint:
                options["endpoint_override"] = endpoint
            if region:
                options["region"] = region
            return pafs.S3FileSystem(**options)
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"out: cannot reach {scheme}://{netloc}: {exc}") from None


@dataclass(frozen=True)
class Location:
    """A folder: ``uri`` as the user wrote it (a local one made absolute), ``fs`` and ``root``
    (the folder's path in ``fs``)."""

    uri: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def of(cls, out: str) -> Location:
        """The location of ``out``: a local path or ``file://`` URI, or a URI of another
        filesystem (:class:`ConfigError` for a scheme pyarrow does not know)."""
        if is_local(out):
            path = local_path(out)
            return cls(path, pafs.LocalFileSystem(), path)
        parts = urlsplit(out)
        if parts.query or parts.fragment:  # OUT/pages and the like are made by joining paths
            raise ConfigError(f"out: {out} has a query or fragment; give the filesystem's "
                              f"options in its environment (AWS_ENDPOINT_URL, AWS_REGION, ...)")
        uri = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        fs = _filesystem(parts.scheme, parts.netloc, _endpoint())
        if parts.scheme == "s3":  # the bucket, then the key prefix
            root = "/".join(p for p in (parts.netloc, parts.path.strip("/")) if p)
        else:  # as pyarrow spells the path in that filesystem (gs: bucket/..., hdfs: /...)
            try:
                root = pafs.FileSystem.from_uri(uri)[1]
            except (OSError, ValueError) as exc:
                raise ConfigError(f"out: cannot reach {uri}: {exc}") from None
        return cls(uri, fs, root)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.uri

    def child(self, name: str) -> Location:
        return Location(f"{self.uri}/{name}", self.fs, f"{self.root}/{name}")

    def path(self, name: str) -> str:
        """``name``'s path in ``fs`` (for pyarrow's readers and writers)."""
        return f"{self.root}/{name}"

    def _errors(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except OSError as exc:
            raise StorageError(f"output {self.uri}: {what}: {exc}") from None

    def makedirs(self) -> None:
        """Create the folder (on an object store there is nothing to create)."""
        if self.local:
            self._errors("creating it", lambda: os.makedirs(self.root, exist_ok=True))

    def names(self) -> list[str]:
        """The files right in the folder, sorted (none when it does not exist)."""
        def listing() -> list[str]:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
            return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
        return self._errors("listing it", listing)

    def folders(self) -> list[str]:
        """The folders right in the folder, sorted (none when it does not exist)."""
        def listing() -> list[str]:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
            return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        return self._errors("listing it", listing)

    def delete_folder(self, name: str) -> None:
        """Remove folder ``name`` with everything in it (one already gone is fine)."""
        def deleting() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_dir(self.path(name))
        self._errors(f"deleting {name}", deleting)

    def exists(self, name: str) -> bool:
        return self._errors(f"looking for {name}", lambda: self.fs.get_file_info(
            self.path(name)).type == pafs.FileType.File)

    def read(self, name: str) -> bytes | None:
        """The content of ``name``, or None when there is no such file."""
        def reading() -> bytes | None:
            try:
                with self.fs.open_input_stream(self.path(name), compression=None) as fh:
                    return fh.read()
            except FileNotFoundError:
                return None
        return self._errors(f"reading {name}", reading)

    def read_schema(self, name: str) -> pa.Schema:
        """The schema of Parquet file ``name`` (its footer)."""
        return self._errors(f"reading {name}", lambda: pq.read_schema(self.path(name),
                                                                     filesystem=self.fs))

    def read_table(self, name: str) -> pa.Table:
        """Parquet file ``name`` whole."""
        return self._errors(f"reading {name}", lambda: pq.read_table(self.path(name),
                                                                    filesystem=self.fs))

    def delete(self, name: str) -> None:
        """Remove ``name`` (a file already gone is fine)."""
        def deleting() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(name))
        self._errors(f"deleting {name}", deleting)

    def put(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` whole and durably (see the module's docstring)."""
        with self.writing(name) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[IO[bytes]]:
        """A file to write ``name`` into: it appears whole once the block ends, and not at
        all if the block raises.  Locally through a temporary file of its own (fsync'd and
        renamed, the folder fsync'd); elsewhere in memory, then one upload."""
        if self.local:
            self.makedirs()
            with replacing(self.root, name, f"output {self.uri}: writing {name}") as fh:
                yield fh
            return
        buffer = io.BytesIO()
        yield buffer

        def upload() -> None:
            with self.fs.open_output_stream(self.path(name), compression=None) as out:
                out.write(buffer.getbuffer())
        self._errors(f"writing {name}", upload)

    def upload(self, local_file: str, name: str, length: int | None = None) -> None:
        """Copy the local file ``local_file`` to ``name``, whole (as :meth:`put`): to an
        object store as one (multipart) upload, which is not visible until it completes.
        With ``length``, its first ``length`` bytes (a file still appended to)."""
        if length is not None or self.local:
            def copying() -> None:
                with open(local_file, "rb") as src, self.writing(name) as dst:
                    left = sys.maxsize if length is None else length  # (None: to its end)
                    while left > 0 and (chunk := src.read(min(1 << 22, left))):
                        dst.write(chunk)
                        left -= len(chunk)
        else:
            def copying() -> None:
                pafs.copy_files(local_file, self.path(name),
                                source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
        self._errors(f"uploading {local_file} as {name}", copying)

    def download(self, name: str, local_file: str) -> None:
        """Copy ``name`` to the local file ``local_file`` (replaced whole, fsync'd)."""
        def copying() -> None:
            with self.fs.open_input_stream(self.path(name), compression=None) as src, \
                    open(local_file, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        self._errors(f"downloading {name}", copying)
