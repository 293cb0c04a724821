"""Upkeep of the job streams (every partition's), run by the reaper (one worker per
round) and by `inspect`.

- `take_round`: one reaper round at a time across all workers (`SET NX PX`).
- `trim`: acknowledged job entries are dropped (lua/trim_jobs.lua), never a pending or
  undelivered one.
- `prune_consumers`: consumers with no pending job that have not read for a while are
  removed (lua/prune_consumers.lua); one that still owns a job never is (redis#9745).
"""

from __future__ import annotations

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.storage.errors import store_errors
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text
from scanstream.storage.scripts import lua_source


class Upkeep:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def take_round(self, owner: str, ttl_ms: int) -> bool:
        """Take `keys.reaper_lock` for `ttl_ms` unless another worker holds it; whether taken."""
        async with store_errors():
            return bool(await self.redis.set(self.keys.reaper_lock, owner, nx=True, px=ttl_ms))

    async def trim(self) -> int:
        """Drop acknowledged job entries, never a pending or undelivered one. Returns how many."""
        trimmed = 0
        async with store_errors():
            for p in self.keys.partitions:
                n, _threshold = await self.redis.eval(lua_source("trim_jobs.lua"), 1, p.jobs)
                trimmed += int(n)
        return trimmed

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Remove consumers with no pending job that have not read for `min_idle_ms`, from
        every partition's group; the names removed from any."""
        removed: set[str] = set()
        async with store_errors():
            for p in self.keys.partitions:
                try:
                    names = await self.redis.eval(
                        lua_source("prune_consumers.lua"), 1, p.jobs, JOB_GROUP, int(min_idle_ms)
                    )
                except redis_errors.ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        continue
                    raise
                removed.update(text(x) for x in names)
        return sorted(removed)
