"""A gate that calls pass through while it is open, and that closes once none is passing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Gate:
    """While open, :meth:`passing` lets callers through at once; :meth:`close` stops new ones
    and returns once those passing are out; :meth:`open` lets the waiting ones go on.  The
    checkpoint's cut closes the DB workers' hand-overs and the coordinator's seeds with it
    (``raycrawl.storage.checkpoints``)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._passing = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @contextlib.asynccontextmanager
    async def passing(self) -> AsyncIterator[None]:
        while not self._open.is_set():  # (closed again before this waiter ran: wait again)
            await self._open.wait()
        self._passing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._passing -= 1
            if not self._passing:
                self._idle.set()

    async def close(self) -> None:
        self._open.clear()
        await self._idle.wait()

    def open(self) -> None:
        self._open.set()
