"""The job streams as operators see them: every partition's length and group with its
lag, the consumers, and the pending jobs with their owner, idle time and deliveries
(`scanstream inspect`, and the reaper's gauges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.storage.errors import store_errors
from scanstream.storage.jobs import job_id
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text

LAG_COUNT_CAP = 10_000  # computing lag by reading entries (Redis < 7) stops here


@dataclass
class GroupInfo:
    partition: int
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None  # entries not yet delivered to the group; None if unknown
    lag_capped: bool = False  # counted up to a cap only (Redis < 7), and it was reached


@dataclass
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass
class PendingJob:
    job_id: str
    consumer: str
    idle_ms: int
    deliveries: int
    scan_id: str | None = None
    strategy: str | None = None


@dataclass
class JobStreamInfo:
    length: int  # entries, over all partitions
    groups: list[GroupInfo] = field(default_factory=list)  # each partition's groups
    consumers: list[ConsumerInfo] = field(default_factory=list)  # summed over partitions

    @property
    def pending(self) -> int:
        return sum(g.pending for g in self.groups if g.name == JOB_GROUP)

    @property
    def lag(self) -> int | None:
        lags = [g.lag for g in self.groups if g.name == JOB_GROUP]
        return None if None in lags else sum(lag for lag in lags if lag is not None)


class JobInfo:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def stream_info(self, lag_cap: int = LAG_COUNT_CAP) -> JobStreamInfo:
        """Length, groups with lag (XINFO's own on Redis 7+, else counted), consumers."""
        info = JobStreamInfo(0)
        consumers: dict[str, ConsumerInfo] = {}
        async with store_errors():
            for p in self.keys.partitions:
                length = int(await self.redis.xlen(p.jobs))
                if length == 0 and not await self.redis.exists(p.jobs):
                    continue
                info.length += length
                for g in await self.redis.xinfo_groups(p.jobs):
                    info.groups.append(await self._group(p.index, p.jobs, g, lag_cap))
                    if text(g["name"]) != JOB_GROUP:
                        continue
                    for c in await self.redis.xinfo_consumers(p.jobs, JOB_GROUP):
                        name = text(c["name"])
                        seen = consumers.setdefault(name, ConsumerInfo(name, 0, int(c["idle"])))
                        seen.pending += int(c["pending"])
                        seen.idle_ms = min(seen.idle_ms, int(c["idle"]))
        info.consumers = sorted(consumers.values(), key=lambda c: c.name)
        return info

    async def _group(self, partition: int, stream: str, g: Any, lag_cap: int) -> GroupInfo:
        name = text(g["name"])
        last = text(g["last-delivered-id"])
        lag = g.get("lag")
        capped = False
        if lag is None:
            after: Any = await self.redis.xrange(stream, f"({last}", "+", count=lag_cap + 1)
            lag, capped = min(len(after), lag_cap), len(after) > lag_cap
        return GroupInfo(
            partition, name, int(g["consumers"]), int(g["pending"]), last, int(lag), capped
        )

    async def pending_jobs(self, count: int = 100) -> list[PendingJob]:
        """The oldest `count` pending jobs with owner, idle time, deliveries and what they are."""
        out: list[PendingJob] = []
        async with store_errors():
            for p in self.keys.partitions:
                out += await self._pending_in(p.index, p.jobs, count)
        out.sort(key=lambda job: job.idle_ms, reverse=True)
        return out[:count]

    async def _pending_in(self, partition: int, stream: str, count: int) -> list[PendingJob]:
        try:
            rows = await self.redis.xpending_range(stream, JOB_GROUP, "-", "+", count)
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        out = [
            PendingJob(
                job_id(partition, text(r["message_id"])),
                text(r["consumer"]),
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows
        ]
        if out:
            pipe = self.redis.pipeline(transaction=False)
            for r in rows:
                entry_id = text(r["message_id"])
                pipe.xrange(stream, entry_id, entry_id)
            for pending, body in zip(out, await pipe.execute(), strict=True):
                if body:
                    pending.scan_id = text(body[0][1].get(b"scan_id", b"")) or None
                    pending.strategy = text(body[0][1].get(b"strategy", b"")) or None
        return out
