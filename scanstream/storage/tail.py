"""Following many scans' streams on few connections: the reads behind the live fan-out.

On a single Redis, `read` is one multiplexed `XREAD BLOCK` (one key per followed scan) on
a client of its own, so a long BLOCK never holds a connection of the hot pool
(redis-py#3138), and the number of followers costs no connections at all (see
live/fanout.py). `last_id` fixes where a newly followed stream starts (one
`XREVRANGE + - COUNT 1`, on the hot client).

On a Redis Cluster one XREAD may only name keys of one hash slot, and each scan has a
slot of its own, so no single read can follow them all, and a BLOCK on one of them
would not wake for the others. `read` polls instead: each round is one pipeline to
each master that owns followed streams (one non-blocking `XREAD COUNT n` per stream,
the masters asked concurrently), routed by the client's slot map of the moment, on the
tail client's one connection per node; nothing new anywhere, it waits `POLL_S` and asks
again, until `block_ms` has passed. A slot that moved is followed to its new owner by
redis-py (which updates its slot map, so the next round goes there at once); what it
cannot serve is `StoreUnavailable`, which the fan-out waits out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from scanstream.errors import ScanstreamError
from scanstream.events import LogEntry
from scanstream.storage.errors import CLIENT_FAULTS, store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replies import entries, text

KEYS_CACHED = 4096  # scan ids whose stream key is kept, so a read builds no key names
# The pause between two polling rounds on a cluster. Polling, because Redis Cluster has
# no blocking read over many slots; the alternative, a sharded pub/sub wake-up, needs an
# SPUBLISH (Redis 7) in every script that writes a stream. 50 ms adds ~25 ms on average
# to an event's way to the browser (unnoticed by anyone watching a scan), and costs each
# idle followed scan 20-25 XREADs a second: ~50 us of this process's CPU each, ~2 us of
# Redis's (so ~12% of a core for 100 followed scans; rounds slow down as they grow).
POLL_S = 0.05

Replies = list[tuple[str, list[LogEntry]]]


class TailUnreadable(ScanstreamError):
    """Redis refused the multiplexed read: a followed key is no longer a stream (see
    `TailReader.not_streams`)."""


class NotAStream(NamedTuple):
    scan_id: str
    key: str
    kind: str  # what the key holds instead


class TailReader:
    def __init__(self, tail: Redis, redis: Redis, keys: Keys) -> None:
        self.tail = tail  # the tail reads only; owned here (`aclose`)
        self.redis = redis  # the hot client, for the short reads
        self.keys = keys
        self._key = lru_cache(maxsize=KEYS_CACHED)(keys.events)
        self._cluster = tail if isinstance(tail, RedisCluster) else None

    @property
    def pool_size(self) -> int:
        """Connections the tail reads may hold (on a cluster: per node)."""
        if self._cluster is not None:
            return int(self._cluster.get_connection_kwargs()["max_connections"])
        return int(self.tail.connection_pool.max_connections)

    async def read(self, positions: Mapping[str, str], *, count: int, block_ms: int) -> Replies:
        """The entries after each scan's position (scan id -> entry id), as (scan id,
        entries); waits up to `block_ms` for the first one (0: for ever, as XREAD).
        `StoreUnavailable`, or `TailUnreadable` when a key is no longer a stream."""
        if self._cluster is not None:
            return await self._poll(self._cluster, positions, count, block_ms)
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

    async def _poll(
        self, cluster: RedisCluster, positions: Mapping[str, str], count: int, block_ms: int
    ) -> Replies:
        """`read` on a cluster: rounds of `_read_once`, `POLL_S` apart."""
        deadline = time.monotonic() + block_ms / 1000 if block_ms else math.inf
        while True:
            found = await self._read_once(cluster, positions, count)
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            await asyncio.sleep(min(POLL_S, left))

    async def _read_once(
        self, cluster: RedisCluster, positions: Mapping[str, str], count: int
    ) -> Replies:
        """One non-blocking XREAD per stream, in one pipeline per master (redis-py sends
        the masters' pipelines concurrently, each on the node's one connection)."""
        scan_ids = list(positions)
        async with store_errors():
            await cluster.initialize()  # the slot map: the first one, or a new one if asked
            pipe = cluster.pipeline(transaction=False)
            for scan_id in scan_ids:
                key = self._key(scan_id)
                # Named node: routing by key would ask the server for XREAD's keys.
                node = cluster.get_node_from_key(key)
                pipe.execute_command(
                    "XREAD", "COUNT", count, "STREAMS", key, positions[scan_id], target_nodes=node
                )
            replies = await pipe.execute(raise_on_error=False)
            for reply in replies:  # an outage first: it is waited out, not evicted
                if isinstance(reply, CLIENT_FAULTS):
                    raise reply
        for reply in replies:
            if isinstance(reply, redis_errors.ResponseError):
                raise TailUnreadable(str(reply)) from reply
            if isinstance(reply, Exception):
                raise reply
        return [
            (scan_id, entries(raw))
            for scan_id, reply in zip(scan_ids, replies, strict=True)
            for _, raw in _stream_replies(reply)
        ]

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
