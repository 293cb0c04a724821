"""Claims on jobs: heartbeats for the jobs a worker runs, reclaiming jobs of dead workers.

Both are scripts (lua/refresh_claims.lua, lua/reclaim.lua): a bare XCLAIM could take a
job back from the worker that reclaimed it meanwhile, and XAUTOCLAIM answers deleted
entries differently on Redis 6.2 and 7.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from scanstream.storage.errors import store_errors
from scanstream.storage.jobs import Job, job_from_entry
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text
from scanstream.storage.scripts import register


class Claims:
    """One consumer's claims on the job stream."""

    def __init__(self, redis: Redis, keys: Keys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self._refresh = register(redis, "refresh_claims.lua")
        self._reclaim = register(redis, "reclaim.lua")

    async def refresh(self, entry_ids: Sequence[str]) -> set[str]:
        """Reset the idle time of jobs this consumer still owns; returns the ids it lost."""
        if not entry_ids:
            return set()
        async with store_errors():
            lost = await self._refresh(
                keys=[self.keys.jobs], args=[JOB_GROUP, self.consumer, *entry_ids]
            )
        return {x.decode() for x in lost}

    async def reclaim(self, min_idle_ms: int, count: int) -> tuple[list[Job], list[str]]:
        """Take over jobs idle longer than `min_idle_ms` (their worker died or froze).

        Returns (jobs to run, ids of pending entries whose body was deleted: the script has
        acknowledged them already, there is nothing to run). See lua/reclaim.lua for why
        this is a script on both Redis 6.2 and 7.
        """
        jobs: list[Job] = []
        dead: list[str] = []
        start = "0-0"
        async with store_errors():
            while len(jobs) < count:
                next_start, claimed, deleted = await self._reclaim(
                    keys=[self.keys.jobs],
                    args=[JOB_GROUP, self.consumer, int(min_idle_ms), start, count - len(jobs)],
                )
                for entry_id, flat, deliveries in claimed:
                    fields = dict(zip(flat[::2], flat[1::2], strict=True))
                    job = job_from_entry(entry_id, fields, deliveries=int(deliveries))
                    if job is None:  # a body that names no scan: nothing to run either
                        dead.append(text(entry_id))
                    else:
                        jobs.append(job)
                dead.extend(text(x) for x in deleted)
                start = text(next_start)
                if start == "0-0":
                    break
        return jobs, dead
