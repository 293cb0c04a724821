"""One waiting long-poll (`GET /v1/scans/{id}/results?wait=S`) as the fan-out sees it.

A waiter follows its scan's stream like an SSE subscriber, on the same per-process tail
reader, so any number of them costs no Redis connection while they wait. It keeps nothing
it is handed: it only needs to know when the terminal scan event has arrived, and then
reads the results once, through the projection cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from scanstream.live.subscriber import Item


class Waiter:
    __slots__ = ("following", "scan_id", "user", "woken")

    def __init__(self, user: str, scan_id: str) -> None:
        self.user = user
        self.scan_id = scan_id
        self.following: str | None = None  # its scan id, once it follows the scan's stream
        self.woken = asyncio.Event()  # the scan ended, or the wait must end early

    def offer(self, items: Sequence[Item], buffer: int) -> bool:
        """A tail read's items: wake on the terminal scan event. Never too slow."""
        if any(item.terminal for item in items):
            self.woken.set()
        return True

    def end(self, reason: str) -> None:
        """End the wait early (the server is shutting down, or the log cannot be read):
        the request answers the results as they are now."""
        self.woken.set()

    async def wait(self, timeout_s: float) -> None:
        """Until woken, or for `timeout_s` at most."""
        if timeout_s <= 0 or self.woken.is_set():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.woken.wait()
        except TimeoutError:
            pass
