"""The running set: scans that may still be running, for the deadline reaper and `inspect`.

Each job partition has its running set (`PartitionKeys.running`, in the partition's slot):
a sorted set of scan ids scored by creation ms, holding the scans whose jobs go to that
partition. The event store adds a scan in the same round trip that creates it (before
its stream exists) and removes it after each end (`EventStore.create_scan`,
`EventStore.end_scan`); a scan's status never depends on it. The removal is best effort,
so the reaper sweeps the sets whole each round (`forget_ended`): an entry can name a
scan that has just ended, never the other way round, and no running scan escapes its
deadline.
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

    async def overdue(self, deadline_s: float, limit: int = 100) -> list[str]:
        """Scans created more than `deadline_s` ago and still in a running set, oldest first."""
        cutoff = ev.wall_ms() - int(deadline_s * 1000)
        found: list[tuple[float, str]] = []
        async with store_errors():
            for p in self.keys.partitions:
                raw: Any = await self.redis.zrangebyscore(
                    p.running, "-inf", cutoff, start=0, num=limit, withscores=True
                )
                found += [(score, text(m)) for m, score in raw]
        found.sort()
        return [i for _, i in found if is_scan_id(i)][:limit]

    async def forget_ended(self, page: int = 500, grace_s: float = 60.0) -> int:
        """Drop every scan that has ended (or expired) from the running sets; the count.

        The sets are kept exact by the ZREM that follows each end, but that ZREM is best
        effort (Redis may fail right after the end was written), so each reaper round
        sweeps them whole: an ended scan leaves by the next round, not at its deadline. A
        scan whose fence does not exist yet is left alone for `grace_s` after its creation
        (it is added to its set just before its stream is created).
        """
        young = ev.wall_ms() - int(grace_s * 1000)
        forgotten = 0
        for p in self.keys.partitions:
            forgotten += await self._forget_ended_in(p.running, page, young)
        return forgotten

    async def _forget_ended_in(self, key: str, page: int, young_ms: int) -> int:
        forgotten = 0
        start = 0
        while True:
            async with store_errors():
                raw: Any = await self.redis.zrange(key, start, start + page - 1, withscores=True)
                rows = [(text(m), int(score)) for m, score in raw]
                valid = [(scan_id, ms) for scan_id, ms in rows if is_scan_id(scan_id)]
                pipe = self.redis.pipeline(transaction=False)
                for scan_id, _ in valid:
                    pipe.hmget(self.keys.scan(scan_id).fence, "terminal", "total")
                replies = await pipe.execute() if valid else []
                gone = [scan_id for scan_id, _ in rows if not is_scan_id(scan_id)] + [
                    scan_id
                    for (scan_id, created_ms), (terminal, total) in zip(valid, replies, strict=True)
                    if terminal is not None or (total is None and created_ms < young_ms)
                ]
                if gone:
                    await self.redis.zrem(key, *gone)
            forgotten += len(gone)
            if len(rows) < page:
                return forgotten
            start += page - len(gone)

    async def scans(self, limit: int = 1000) -> list[RunningScan]:
        """The running sets, oldest first, each scan with its fence's counts.

        An entry can name a scan that has just ended (the reaper removes it), so each
        scan's own fence answers whether it is really running.
        """
        rows: list[tuple[str, int]] = []
        async with store_errors():
            for p in self.keys.partitions:
                raw: Any = await self.redis.zrange(p.running, 0, limit - 1, withscores=True)
                rows += [(text(m), int(score)) for m, score in raw if is_scan_id(text(m))]
            rows = sorted(rows, key=lambda row: (row[1], row[0]))[:limit]
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
