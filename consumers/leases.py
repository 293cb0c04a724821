"""Claims on jobs: heartbeats for the jobs this worker runs, reclaiming jobs of dead workers."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from redis.asyncio import Redis

from scanstream.ids import is_scan_id
from scanstream.jobs import Job
from scanstream.keys import JOB_GROUP, Keys
from scanstream.store import store_errors


class Leases:
    def __init__(self, redis: Redis, keys: Keys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        lua = resources.files("scanstream").joinpath("lua", "refresh_claims.lua").read_text()
        self._refresh = redis.register_script(lua)

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

        Returns (jobs to run, ids whose body was deleted: acknowledge them, there is
        nothing to run). XAUTOCLAIM reports deleted entries separately on Redis 7, and as
        entries without fields on 6.2 (redis#6199, #10756); both are handled.
        """
        jobs: list[Job] = []
        dead: list[str] = []
        start = "0-0"
        async with store_errors():
            while len(jobs) < count:
                reply = await self.redis.xautoclaim(
                    self.keys.jobs, JOB_GROUP, self.consumer, min_idle_ms,
                    start_id=start, count=count - len(jobs),
                )
                start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
                for entry_id, fields in reply[1]:
                    job = job_from_entry(entry_id, fields, deliveries=2)
                    if job is None:
                        dead.append(_text(entry_id))
                    else:
                        jobs.append(job)
                if len(reply) > 2:
                    dead.extend(_text(x) for x in reply[2])
                if start == "0-0":
                    break
        return jobs, dead


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def job_from_entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None,
                   deliveries: int = 1) -> Job | None:
    """A Job, or None for an entry without a usable body."""
    if not fields or b"scan_id" not in fields or b"strategy" not in fields:
        return None
    scan_id = fields[b"scan_id"].decode(errors="replace")
    if not is_scan_id(scan_id):
        return None
    return Job(_text(entry_id), scan_id, fields[b"strategy"].decode(errors="replace"), deliveries)
