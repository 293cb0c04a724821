"""One SSE connection as the fan-out sees it: a bounded queue of formatted entries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scanstream.live import sse


@dataclass(frozen=True, slots=True)
class Item:
    """One entry, formatted once, shared by every subscriber of its stream."""

    key: tuple[int, int]
    data: bytes
    terminal: bool


BATCH = 256  # entries sent in one write at most

HEARTBEAT = Item((-1, -1), sse.KEEPALIVE, False)
CLOSE = Item((-1, -1), b"", False)


class Subscriber:
    """One SSE connection: counted from admission to close; fed entries while it follows."""

    __slots__ = (
        "_timer",
        "abort",
        "dropped",
        "following",
        "last_write",
        "queue",
        "scan_id",
        "user",
    )

    def __init__(self, user: str, scan_id: str) -> None:
        self.user = user
        self.scan_id = scan_id
        self.following: str | None = None  # its scan id, once it follows the scan's stream
        # Bounded by the fan-out, which drops a subscriber whose backlog would pass its
        # buffer (a whole tail read is always accepted into an empty queue).
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.dropped: str | None = None  # why the server closes it early
        self.last_write = time.monotonic()
        self.abort: Callable[[], object] | None = None  # cuts the connection (set by the response)
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, items: Sequence[Item], buffer: int) -> bool:
        """Queue a tail read's items; False (nothing queued) when this subscriber is too
        slow: what it has not sent yet plus `items` would pass `buffer`. A subscriber that
        has sent everything takes any one read, however large."""
        backlog = self.queue.qsize()
        if backlog and backlog + len(items) > buffer:
            return False
        put = self.queue.put_nowait
        for item in items:
            put(item)
        return True

    def end(self, reason: str) -> None:
        """Stop now: the response sends what it has, a comment saying `reason`, and ends."""
        self.dropped = reason
        self.queue.put_nowait(CLOSE)  # seen after what it already has queued, or sooner

    async def next_batch(self, limit: int = BATCH) -> list[Item]:
        """Wait for at least one item; return up to `limit` of those queued by then."""
        items = [await self.queue.get()]
        while len(items) < limit and not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items
