"""The running set: scans that may still be running, for the deadline reaper and `inspect`.

`<prefix>:scans:running` is a sorted set of scan ids scored by creation ms. The event
store adds a scan in the same round trip that creates it (before its stream exists) and
removes it after each end (`EventStore.create_scan`, `EventStore.end_scan`); a scan's
status never depends on it. The removal is best effort, so the reaper sweeps the whole
set each round (`forget_ended`): an entry can name a scan that has just ended, never the
other way round, and no running scan escapes its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.ids import is_scan_id
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text


@dataclass(frozen=True, slots=True)
class RunningScan:
    """An entry of the running set with its fence's counts (`inspect`)."""

    scan_id: str
    created_ms: int
    exists: bool  # False: expired or never created (a creation that died half-way)
    terminal: str | None
    total: int
    completed: int
    failed: int


class RunningScans:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.key = keys.running_scans

    async def overdue(self, deadline_s: float, limit: int = 100) -> list[str]:
        """Scans created more than `deadline_s` ago and still in the running set, oldest first."""
        cutoff = ev.wall_ms() - int(deadline_s * 1000)
        async with store_errors():
            raw = await self.redis.zrangebyscore(self.key, "-inf", cutoff, start=0, num=limit)
        return [i for i in map(text, raw) if is_scan_id(i)]

    async def forget_ended(self, page: int = 500, grace_s: float = 60.0) -> int:
        """Drop every scan that has ended (or expired) from the running set; the count.

        The set is kept exact by the ZREM that follows each end, but that ZREM is best
        effort (Redis may fail right after the end was written), so each reaper round
        sweeps the whole set: an ended scan leaves it by the next round, not at its
        deadline. A scan whose fence does not exist yet is left alone for `grace_s` after
        its creation (it is added to the set just before its stream is created).
        """
        forgotten = 0
        start = 0
        young = ev.wall_ms() - int(grace_s * 1000)
        while True:
            async with store_errors():
                raw: Any = await self.redis.zrange(
                    self.key, start, start + page - 1, withscores=True
                )
                rows = [(text(m), int(score)) for m, score in raw]
                pipe = self.redis.pipeline(transaction=False)
                for scan_id, _ in rows:
                    if is_scan_id(scan_id):
                        pipe.hmget(self.keys.scan(scan_id).fence, "terminal", "total")
                    else:
                        pipe.echo(b"malformed")
                replies = await pipe.execute() if rows else []
                gone = [
                    scan_id
                    for (scan_id, created_ms), reply in zip(rows, replies, strict=True)
                    if reply == b"malformed"
                    or reply[0] is not None
                    or (reply[1] is None and created_ms < young)
                ]
                if gone:
                    await self.redis.zrem(self.key, *gone)
            forgotten += len(gone)
            if len(rows) < page:
                return forgotten
            start += page - len(gone)

    async def scans(self, limit: int = 1000) -> list[RunningScan]:
        """The running set, oldest first, each with its fence's counts.

        An entry can name a scan that has just ended (the reaper removes it), so each
        scan's own fence answers whether it is really running.
        """
        async with store_errors():
            raw: Any = await self.redis.zrange(self.key, 0, limit - 1, withscores=True)
            rows = [(text(m), int(score)) for m, score in raw if is_scan_id(text(m))]
            pipe = self.redis.pipeline(transaction=False)
            for scan_id, _ in rows:
                pipe.hmget(
                    self.keys.scan(scan_id).fence, "total", "completed", "failed", "terminal"
                )
            replies = await pipe.execute() if rows else []
        out: list[RunningScan] = []
        for (scan_id, created_ms), (total, completed, failed, terminal) in zip(
            rows, replies, strict=True
        ):
            out.append(
                RunningScan(
                    scan_id,
                    created_ms,
                    exists=total is not None,
                    terminal=text(terminal) if terminal else None,
                    total=int(total or 0),
                    completed=int(completed or 0),
                    failed=int(failed or 0),
                )
            )
        return out
