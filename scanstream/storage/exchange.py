"""Whole logs in and out of Redis, for the replay tool: every entry of a scan's stream
exactly as stored (export), and an exported log written back as a scan (import).

An import writes the stream (entry ids as exported), its fence and their TTL in one
script (`lua/import_log.lua`), so it never mixes with a scan that exists or appears
meanwhile; its keys share the scan's hash slot, so it runs on a cluster too. The owner's
listing is in another hash slot, so it is written after, on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from scanstream.errors import ScanConflict
from scanstream.ids import scan_created_ms
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text
from scanstream.storage.scripts import register

PAGE = 1000  # entries per XRANGE round trip
# One stream entry as stored: its id, and its fields in order, as bytes.
StoredEntry = tuple[str, tuple[tuple[bytes, bytes], ...]]


class LogExchange:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._import = register(redis, "import_log.lua")

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
        """Write the entries (with their ids), the fence and the TTL at once.
        `ScanConflict` when the scan exists already (then nothing is written)."""
        k = self.keys.scan(scan_id)
        args: list[Any] = ["" if ttl_s is None else ttl_s, len(fence)]
        for field, value in fence.items():
            args += [field, value]
        for entry_id, fields in raw:
            args += [entry_id, len(fields)]
            for name, data in fields:
                args += [name, data]
        async with store_errors():
            reply = await self._import(keys=[k.events, k.fence], args=args)
        if reply == b"exists":
            raise ScanConflict(
                f"{k.events} already exists: import --as-new to get a new "
                "scan id, or import into another prefix or Redis"
            )

    async def list_for(self, user_id: str, scan_id: str) -> None:
        """List the scan for its owner (`GET /v1/scans`)."""
        async with store_errors():
            await self.redis.zadd(
                self.keys.user_scans(user_id), {scan_id: scan_created_ms(scan_id)}
            )
