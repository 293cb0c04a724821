"""The job stream as operators see it: length, groups with their lag, consumers, and
the pending jobs with their owner, idle time and deliveries (`scanstream inspect`, and
the reaper's gauges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.storage.errors import store_errors
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text

LAG_COUNT_CAP = 10_000  # computing lag by reading entries (Redis < 7) stops here


@dataclass
class GroupInfo:
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
    length: int
    groups: list[GroupInfo] = field(default_factory=list)
    consumers: list[ConsumerInfo] = field(default_factory=list)


class JobInfo:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def stream_info(self, lag_cap: int = LAG_COUNT_CAP) -> JobStreamInfo:
        """Length, groups with lag (XINFO's own on Redis 7+, else counted), consumers."""
        async with store_errors():
            length = int(await self.redis.xlen(self.keys.jobs))
            if length == 0 and not await self.redis.exists(self.keys.jobs):
                return JobStreamInfo(0)
            groups_raw = await self.redis.xinfo_groups(self.keys.jobs)
            info = JobStreamInfo(length)
            for g in groups_raw:
                name = text(g["name"])
                last = text(g["last-delivered-id"])
                lag = g.get("lag")
                capped = False
                if lag is None:
                    after: Any = await self.redis.xrange(
                        self.keys.jobs, f"({last}", "+", count=lag_cap + 1
                    )
                    lag, capped = min(len(after), lag_cap), len(after) > lag_cap
                info.groups.append(
                    GroupInfo(name, int(g["consumers"]), int(g["pending"]), last, int(lag), capped)
                )
                if name == JOB_GROUP:
                    for c in await self.redis.xinfo_consumers(self.keys.jobs, name):
                        info.consumers.append(
                            ConsumerInfo(text(c["name"]), int(c["pending"]), int(c["idle"]))
                        )
        return info

    async def pending_jobs(self, count: int = 100) -> list[PendingJob]:
        """The oldest `count` pending jobs with owner, idle time, deliveries and what they are."""
        async with store_errors():
            try:
                rows = await self.redis.xpending_range(self.keys.jobs, JOB_GROUP, "-", "+", count)
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return []
                raise
            out = [
                PendingJob(
                    text(r["message_id"]),
                    text(r["consumer"]),
                    int(r["time_since_delivered"]),
                    int(r["times_delivered"]),
                )
                for r in rows
            ]
            if out:
                pipe = self.redis.pipeline(transaction=False)
                for p in out:
                    pipe.xrange(self.keys.jobs, p.job_id, p.job_id)
                for p, body in zip(out, await pipe.execute(), strict=True):
                    if body:
                        p.scan_id = text(body[0][1].get(b"scan_id", b"")) or None
                        p.strategy = text(body[0][1].get(b"strategy", b"")) or None
        return out
