"""Whole logs in and out of Redis, for the replay tool: every entry of a scan's stream
exactly as stored (export), and an exported log written back as a scan (import).

An import writes the stream (entry ids as exported), its fence and their TTL in one
MULTI/EXEC under WATCH, so it never mixes with a scan that appears meanwhile; the
owner's listing is in another hash slot, so it is written after, on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.errors import ScanConflict
from scanstream.ids import scan_created_ms
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text

PAGE = 1000  # entries per XRANGE round trip
# One stream entry as stored: its id, and its fields in order, as bytes.
StoredEntry = tuple[str, tuple[tuple[bytes, bytes], ...]]


class LogExchange:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    async def read_all(self, scan_id: str) -> list[StoredEntry]:
        """Every entry of the scan's stream, page by page ([] when it has none)."""
        key = self.keys.events(scan_id)
        out: list[StoredEntry] = []
        start = "-"
        while True:
            async with store_errors():
                page: list[Any] = list(await self.redis.xrange(key, start, "+", count=PAGE) or [])
            for entry_id, fields in page:
                out.append((text(entry_id), tuple((fields or {}).items())))
            if len(page) < PAGE:
                return out
            start = f"({out[-1][0]}"

    async def write(
        self,
        scan_id: str,
        raw: Sequence[StoredEntry],
        fence: Mapping[str, str],
        ttl_s: int | None,
    ) -> None:
        """Write the entries (with their ids), the fence and the TTL as one transaction.
        `ScanConflict` when the scan exists already, or is written to meanwhile."""
        k = self.keys.scan(scan_id)
        async with store_errors():
            try:
                await self._write(k.events, k.fence, raw, fence, ttl_s)
            except redis_errors.WatchError:
                raise ScanConflict(f"{scan_id} was written to while importing") from None

    async def list_for(self, user_id: str, scan_id: str) -> None:
        """List the scan for its owner (`GET /v1/scans`)."""
        async with store_errors():
            await self.redis.zadd(
                self.keys.user_scans(user_id), {scan_id: scan_created_ms(scan_id)}
            )

    async def _write(
        self,
        events_key: str,
        fence_key: str,
        raw: Sequence[StoredEntry],
        fence: Mapping[str, str],
        ttl: int | None,
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(events_key, fence_key)
            if await pipe.exists(events_key, fence_key):
                raise ScanConflict(
                    f"{events_key} already exists: import --as-new to get a new "
                    "scan id, or import into another prefix or Redis"
                )
            pipe.multi()
            for entry_id, fields in raw:
                flat: list[Any] = []
                for name, value in fields:
                    flat += [name, value]
                pipe.execute_command("XADD", events_key, entry_id, *flat)
            if fence:
                pipe.hset(fence_key, mapping=dict(fence))  # type: ignore[arg-type]
            if ttl is not None:
                pipe.expire(events_key, ttl)
                if fence:
                    pipe.expire(fence_key, ttl)
            await pipe.execute()
