"""Per-user admission of new scans: scans per minute and active scans (lua/admit_scan.lua).

Both live in the user's hash slot. A scan joins the user's active set when admitted;
it leaves when a later admission finds the set full and the scan's fence says it has
ended (or it never came to exist): ends are written in the scan's own slot, so the
set is swept lazily, by the one who needs the room, and never drifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from scanstream.events import wall_ms
from scanstream.ids import is_scan_id, scan_created_ms
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text
from scanstream.storage.scripts import register

CREATE_GRACE_S = 60  # an admitted scan whose stream does not exist yet may still be created


@dataclass(frozen=True, slots=True)
class Admission:
    """`ok`, or why not: `rate` (retry after `retry_after_s`) or `active` (the cap)."""

    outcome: str
    retry_after_s: int = 0


class UserQuotas:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        scans_per_minute: int,
        max_active: int,
        ttl_s: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.scans_per_minute = scans_per_minute
        self.max_active = max_active
        self.ttl_s = max(1, ttl_s)
        self._admit = register(redis, "admit_scan.lua")

    async def admit(self, user_id: str, scan_id: str) -> Admission:
        """Count the scan in, or say which limit stops it."""
        for _ in range(2):  # again once, after dropping the scans that have ended
            reply = await self._call(user_id, scan_id)
            outcome = text(reply[0])
            if outcome == "ok":
                return Admission("ok")
            if outcome == "rate":
                return Admission("rate", max(1, -(-int(reply[1]) // 1000)))
            if not await self._forget_ended(user_id, [text(i) for i in reply[1:]]):
                break
        return Admission("active", ACTIVE_RETRY_AFTER_S)

    async def _call(self, user_id: str, scan_id: str) -> Any:
        keys = [self.keys.user_active(user_id), self.keys.user_bucket(user_id)]
        args: list[Any] = [wall_ms(), self.scans_per_minute, self.max_active, scan_id, self.ttl_s]
        async with store_errors():
            return await self._admit(keys=keys, args=args)

    async def _forget_ended(self, user_id: str, scan_ids: list[str]) -> int:
        """Drop the user's scans that have ended or never came to be; how many."""
        valid = [s for s in scan_ids if is_scan_id(s)]
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for scan_id in valid:
                pipe.hmget(self.keys.scan(scan_id).fence, "terminal", "total")
            fences = await pipe.execute() if valid else []
            young = wall_ms() - CREATE_GRACE_S * 1000
            gone = [s for s in scan_ids if not is_scan_id(s)] + [
                scan_id
                for scan_id, (terminal, total) in zip(valid, fences, strict=True)
                if terminal is not None or (total is None and scan_created_ms(scan_id) < young)
            ]
            if gone:
                await self.redis.zrem(self.keys.user_active(user_id), *gone)
        return len(gone)


ACTIVE_RETRY_AFTER_S = 5  # scans take seconds to minutes: ask again in a few seconds
