"""Claims on jobs: heartbeats for the jobs a worker runs, reclaiming jobs of dead workers.

Both are scripts (lua/refresh_claims.lua, lua/reclaim.lua): a bare XCLAIM could take a
job back from the worker that reclaimed it meanwhile, and XAUTOCLAIM answers deleted
entries differently on Redis 6.2 and 7.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from scanstream.storage.errors import store_errors
from scanstream.storage.jobs import Job, by_partition, job_from_entry, job_id
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text
from scanstream.storage.scripts import pipelined, register, script_call


class Claims:
    """One consumer's claims on the job streams of every partition."""

    def __init__(self, redis: Redis, keys: Keys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self._refresh = register(redis, "refresh_claims.lua")
        self._reclaim = register(redis, "reclaim.lua")
        self._next_partition = 0  # where the next reclaim starts: every partition gets a turn

    async def refresh(self, job_ids: Sequence[str]) -> set[str]:
        """Reset the idle time of jobs this consumer still owns; returns the ids it lost.

        One script call per partition, all in one pipelined round trip."""
        if not job_ids:
            return set()
        grouped = by_partition(job_ids)
        calls = [
            script_call(
                self._refresh,
                [self.keys.partitions[p].jobs],
                [JOB_GROUP, self.consumer, *entry_ids],
            )
            for p, entry_ids in grouped.items()
        ]
        async with store_errors():
            replies = await pipelined(self.redis, calls)
        lost: set[str] = set()
        for p, reply in zip(grouped, replies, strict=True):
            lost.update(job_id(p, text(x)) for x in reply)
        return lost

    async def reclaim(self, min_idle_ms: int, count: int) -> tuple[list[Job], list[str]]:
        """Take over up to `count` jobs idle longer than `min_idle_ms` (their worker died or
        froze), partition by partition, starting where the last call stopped.

        Returns (jobs to run, ids of pending entries whose body was deleted: the script has
        acknowledged them already, there is nothing to run). See lua/reclaim.lua for why
        this is a script on both Redis 6.2 and 7.
        """
        jobs: list[Job] = []
        dead: list[str] = []
        partitions = self.keys.partitions
        first = self._next_partition
        self._next_partition = (first + 1) % len(partitions)
        for offset in range(len(partitions)):
            if len(jobs) >= count:
                break
            p = partitions[(first + offset) % len(partitions)]
            await self._reclaim_partition(p.index, p.jobs, min_idle_ms, count, jobs, dead)
        return jobs, dead

    async def _reclaim_partition(
        self,
        partition: int,
        stream: str,
        min_idle_ms: int,
        count: int,
        jobs: list[Job],
        dead: list[str],
    ) -> None:
        start = "0-0"
        async with store_errors():
            while len(jobs) < count:
                next_start, claimed, deleted = await self._reclaim(
                    keys=[stream],
                    args=[JOB_GROUP, self.consumer, int(min_idle_ms), start, count - len(jobs)],
                )
                for entry_id, flat, deliveries in claimed:
                    fields = dict(zip(flat[::2], flat[1::2], strict=True))
                    job = job_from_entry(partition, entry_id, fields, deliveries=int(deliveries))
                    if job is None:  # a body that names no scan: nothing to run either
                        dead.append(job_id(partition, text(entry_id)))
                    else:
                        jobs.append(job)
                dead.extend(job_id(partition, text(x)) for x in deleted)
                start = text(next_start)
                if start == "0-0":
                    break
