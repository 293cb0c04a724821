"""Per-user keys beside the scans: the list of a user's scans, and idempotency keys.

Neither is a source of truth for any scan: the list only helps `GET /v1/scans` find
ids (an id whose stream has expired is skipped and removed lazily), and an idempotency
key only maps a client's key to the scan id it minted.

The list is a sorted set scored by the creation ms embedded in the (UUIDv7) scan id, so
its order (score, then member) is exactly the ids' own order, and a cursor (the last id
returned) is all it takes to resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from scanstream.events import wall_ms
from scanstream.ids import is_scan_id, scan_created_ms
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.scripts import Call


def digest(value: str) -> str:
    """A client's idempotency key as a fixed-size part of a key name."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _ids(raw: Sequence[Any]) -> list[str]:
    out = []
    for member in raw:
        value = member.decode() if isinstance(member, bytes) else member
        if is_scan_id(value):  # never hand on something no key may be built from
            out.append(value)
    return out


class ScanIndex:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        # Nothing listed can outlive this: a scan ends by its deadline, then expires.
        self.ttl_s = max(1, int(ttl_s))

    def listing(self, user_id: str, scan_id: str) -> Listing:
        """The scan, to be listed for its user along with its jobs (`JobQueue.enqueue`)."""
        return Listing(self, user_id, scan_id)

    def listing_calls(self, user_id: str, scan_id: str, now_ms: int) -> list[Call]:
        """For a pipeline of the storage layer: list the scan, and trim what must have expired."""
        key = self.keys.user_scans(user_id)
        return [
            (None, ("ZADD", key, scan_created_ms(scan_id), scan_id)),
            (None, ("ZREMRANGEBYSCORE", key, "-inf", f"({now_ms - self.ttl_s * 1000}")),
            (None, ("EXPIRE", key, self.ttl_s)),
        ]

    async def page(self, user_id: str, cursor: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` ids older than `cursor` (or the newest), newest first, and whether
        more follow."""
        key = self.keys.user_scans(user_id)
        async with store_errors():
            if cursor is None:
                raw = await self.redis.zrevrange(key, 0, limit)
                ids = _ids(raw)
            else:
                # Ids minted in the cursor's own millisecond sort by their random tail;
                # read that millisecond whole, then the strictly older ones, in one trip.
                ms = scan_created_ms(cursor)
                pipe = self.redis.pipeline(transaction=False)
                pipe.zrevrangebyscore(key, ms, ms)
                pipe.zrevrangebyscore(key, f"({ms}", "-inf", start=0, num=limit + 1)
                same_ms, older = await pipe.execute()
                ids = [i for i in _ids(same_ms) if i < cursor] + _ids(older)
        return ids[:limit], len(ids) > limit

    async def remove(self, user_id: str, scan_ids: Sequence[str]) -> None:
        if scan_ids:
            async with store_errors():
                await self.redis.zrem(self.keys.user_scans(user_id), *scan_ids)

    # -- idempotency keys ---------------------------------------------------------------

    def _idem(self, user_id: str, key: str) -> str:
        return self.keys.idempotency(user_id, digest(key))

    async def claim(self, user_id: str, key: str, scan_id: str) -> str | None:
        """Map the key to `scan_id` unless it is taken: None if claimed, else the id it holds."""
        name = self._idem(user_id, key)
        async with store_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(name, scan_id, nx=True, ex=self.ttl_s)
            pipe.get(name)
            claimed, held = await pipe.execute()
        if claimed:
            return None
        value = held.decode() if isinstance(held, bytes) else held
        if value and is_scan_id(value):
            return value
        await self.replace(user_id, key, scan_id)  # unreadable mapping: take it over
        return None

    async def replace(self, user_id: str, key: str, scan_id: str) -> None:
        async with store_errors():
            await self.redis.set(self._idem(user_id, key), scan_id, ex=self.ttl_s)


@dataclass(frozen=True, slots=True)
class Listing:
    """A scan to list for its user, in the same round trip as another write."""

    index: ScanIndex
    user_id: str
    scan_id: str

    def calls(self) -> list[Call]:
        return self.index.listing_calls(self.user_id, self.scan_id, wall_ms())
