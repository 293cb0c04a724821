"""Following many scans' streams on one connection: the reads behind the live fan-out.

`read` is one multiplexed `XREAD BLOCK` (one key per followed scan) on a client of its
own, so a long BLOCK never holds a connection of the hot pool (redis-py#3138), and the
number of followers costs no connections at all (see live/fanout.py). `last_id` fixes
where a newly followed stream starts (one `XREVRANGE + - COUNT 1`, on the hot client).

Redis Cluster: one XREAD may only name keys of one hash slot, and each scan has its own
slot, so a cluster deployment needs one read per slot (or per node, with a reader per
node). This reader targets a single Redis node (or a primary with replicas).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.errors import ScanstreamError
from scanstream.events import LogEntry
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import entries, text

KEYS_CACHED = 4096  # scan ids whose stream key is kept, so a read builds no key names


class TailUnreadable(ScanstreamError):
    """Redis refused the multiplexed read: a followed key is no longer a stream (see
    `TailReader.not_streams`)."""


class NotAStream(NamedTuple):
    scan_id: str
    key: str
    kind: str  # what the key holds instead


class TailReader:
    def __init__(self, tail: Redis, redis: Redis, keys: Keys) -> None:
        self.tail = tail  # XREAD BLOCK only; owned here (`aclose`)
        self.redis = redis  # the hot client, for the short reads
        self.keys = keys
        self._key = lru_cache(maxsize=KEYS_CACHED)(keys.events)

    @property
    def pool_size(self) -> int:
        """Connections the blocking reads may hold."""
        return int(self.tail.connection_pool.max_connections)

    async def read(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, list[LogEntry]]]:
        """The entries after each scan's position (scan id -> entry id), as (scan id,
        entries); waits up to `block_ms` for the first one. `StoreUnavailable`, or
        `TailUnreadable` when a key is no longer a stream."""
        streams: dict[Any, Any] = {}  # stream key -> position
        scan_of: dict[str, str] = {}
        for scan_id, position in positions.items():
            key = self._key(scan_id)
            streams[key] = position
            scan_of[key] = scan_id
        async with store_errors():
            try:
                reply = await self.tail.xread(streams, count=count, block=block_ms)
            except redis_errors.ResponseError as exc:
                raise TailUnreadable(str(exc)) from exc
        return [(scan_of[key], entries(raw)) for key, raw in _stream_replies(reply)]

    async def last_id(self, scan_id: str) -> str | None:
        """The id of the stream's last entry; None when it has none."""
        async with store_errors():
            last: Any = await self.redis.xrevrange(self._key(scan_id), "+", "-", count=1)
        return text(last[0][0]) if last else None

    async def not_streams(self, scan_ids: Sequence[str]) -> list[NotAStream]:
        """The scans whose key holds something other than a stream (one round trip)."""
        keys = [self._key(scan_id) for scan_id in scan_ids]
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            kinds = await pipe.execute()
        return [
            NotAStream(scan_id, key, text(kind))
            for scan_id, key, kind in zip(scan_ids, keys, kinds, strict=True)
            if kind not in (b"stream", b"none", "stream", "none")
        ]

    async def aclose(self) -> None:
        await self.tail.aclose()


def _stream_replies(reply: Any) -> Iterator[tuple[str, Sequence[tuple[bytes, Any]]]]:
    """XREAD's reply as (key, entries), for RESP2 (a list) and RESP3 (a map)."""
    if not reply:
        return
    pairs = reply.items() if isinstance(reply, dict) else reply
    for key, raw in pairs:
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], list):
            raw = raw[0]  # RESP3 wraps each stream's entries once more
        yield (key.decode() if isinstance(key, bytes) else key), raw
