"""An S3-compatible server on loopback for the tests: moto's, started once per test session.

Its port is chosen when this module is imported, before the session's Ray starts, so that
:data:`ENV` (the standard ``AWS_*`` variables raycrawl reads) can be handed to every Ray
worker (through the environment the session's Ray starts with, see ``tests/conftest.py``) and
to the CLI in subprocesses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pyarrow.fs as pafs

# The port stays bound (not listening) until the server starts, so that nothing else of the
# session (a test's web server, a client's local port) takes it meanwhile.
_HELD = socket.socket()
_HELD.bind(("127.0.0.1", 0))
PORT = int(_HELD.getsockname()[1])
ENV = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{PORT}", "AWS_ACCESS_KEY_ID": "raycrawl-test",
       "AWS_SECRET_ACCESS_KEY": "raycrawl-test", "AWS_DEFAULT_REGION": "us-east-1"}
START_TIMEOUT_S = 60.0


class S3Server:
    """``python -m moto.server`` on 127.0.0.1:PORT; :meth:`bucket` makes a fresh bucket."""

    def __init__(self) -> None:
        os.environ.update(ENV)
        # Its log (a line per request) goes to a file: a pipe nobody reads fills up and
        # stalls the server mid-request.
        self.log = tempfile.TemporaryFile()
        _HELD.close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(PORT)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"moto's server did not start: "
                                   f"{self.log.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not listen") from None
                time.sleep(0.05)
        self.fs = pafs.S3FileSystem(endpoint_override=ENV["AWS_ENDPOINT_URL"],
                                    region="us-east-1", allow_bucket_creation=True)

    def bucket(self) -> str:
        """A new empty bucket's name."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.fs.create_dir(name)
        return name

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()
