"""Claims on jobs: heartbeats for the jobs this worker runs, reclaiming jobs of dead workers."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from scanstream.ids import is_scan_id
from scanstream.storage.connection import text
from scanstream.storage.events import lua_source, store_errors
from scanstream.storage.jobs import Job
from scanstream.storage.keys import JOB_GROUP, Keys


class Leases:
    def __init__(self, redis: Redis, keys: Keys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self._refresh = redis.register_script(lua_source("refresh_claims.lua"))
        self._reclaim = redis.register_script(lua_source("reclaim.lua"))

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


def job_from_entry(
    entry_id: bytes | str, fields: dict[bytes, bytes] | None, deliveries: int = 1
) -> Job | None:
    """A Job, or None for an entry without a usable body."""
    if not fields or b"scan_id" not in fields or b"strategy" not in fields:
        return None
    scan_id = fields[b"scan_id"].decode(errors="replace")
    if not is_scan_id(scan_id):
        return None
    return Job(text(entry_id), scan_id, fields[b"strategy"].decode(errors="replace"), deliveries)
