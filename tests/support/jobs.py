"""The job queue's partitions as tests see them: totals over every partition's keys."""

from __future__ import annotations

from redis.asyncio import Redis

from scanstream.storage.keys import JOB_GROUP, Keys


async def pending_count(redis: Redis, keys: Keys) -> int:
    """Jobs delivered and not yet acknowledged, in every partition's group (XPENDING)."""
    total = 0
    for p in keys.partitions:
        total += int((await redis.xpending(p.jobs, JOB_GROUP))["pending"])
    return total


async def job_entries(redis: Redis, keys: Keys) -> int:
    """Entries left in every partition's job stream (XLEN): what trimming has not dropped."""
    return sum([int(await redis.xlen(p.jobs)) for p in keys.partitions])


async def running_count(redis: Redis, keys: Keys) -> int:
    """Scans in every partition's running set (ZCARD)."""
    return sum([int(await redis.zcard(p.running)) for p in keys.partitions])
