"""The strategy job queue: one job per (scan, strategy) on `<prefix>:jobs`, read by the
`strategy-workers` consumer group.

The job stream lives outside the scan's hash slot, so "append result, then XACK" cannot
be atomic: a redelivery after a crash between the two is harmless because every write
to the scan is fenced (see lua/strategy_write.lua) and every fold ignores repeats.

Beside the queue itself (enqueue, read, ack): claims on running jobs (`claims.py`),
upkeep (`upkeep.py`), dead letters (`dead_letters.py`), and what operators see
(`job_info.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from scanstream.errors import ScanstreamError
from scanstream.ids import is_scan_id
from scanstream.storage.errors import store_errors
from scanstream.storage.index import Listing
from scanstream.storage.keys import JOB_GROUP, Keys
from scanstream.storage.replies import text


class GroupMissing(ScanstreamError):
    """The job stream has no consumer group (Redis lost its data): `ensure_group` again."""


class Job:
    __slots__ = ("deliveries", "entry_id", "scan_id", "strategy")

    def __init__(self, entry_id: str, scan_id: str, strategy: str, deliveries: int = 1) -> None:
        self.entry_id = entry_id
        self.scan_id = scan_id
        self.strategy = strategy
        self.deliveries = deliveries

    def __repr__(self) -> str:
        return (
            f"Job({self.entry_id}, {self.scan_id}, {self.strategy}, deliveries={self.deliveries})"
        )


def job_fields(scan_id: str, strategy: str) -> dict[Any, Any]:
    return {"scan_id": scan_id, "strategy": strategy}


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


class JobQueue:
    """The queue as the API (enqueue) and the workers (read, ack) use it.

    `blocking`: a client of its own for reads that wait (XREADGROUP BLOCK), so a long
    BLOCK never holds a connection of the hot pool (see storage/connection.py).
    """

    def __init__(self, redis: Redis, keys: Keys, *, blocking: Redis | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.blocking = blocking or redis

    async def ensure_group(self) -> None:
        """Create the job stream and its consumer group if missing (idempotent)."""
        async with store_errors():
            try:
                await self.redis.xgroup_create(self.keys.jobs, JOB_GROUP, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def enqueue(
        self, scan_id: str, strategies: Sequence[str], *, listing: Listing | None = None
    ) -> None:
        """Queue one job per strategy; with `listing`, list the scan for its user in the
        same round trip (`ScanIndex.listing`)."""
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            if listing is not None:
                listing.add_into(pipe)
            self.enqueue_into(pipe, scan_id, strategies)
            await pipe.execute()

    def enqueue_into(self, pipe: Pipeline, scan_id: str, strategies: Sequence[str]) -> None:
        """On a pipeline of the storage layer: one job per strategy."""
        for name in strategies:
            pipe.xadd(self.keys.jobs, job_fields(scan_id, name))

    async def read(
        self, consumer: str, count: int, *, position: str = ">", block_ms: int | None = None
    ) -> list[tuple[str, Job | None]]:
        """Up to `count` jobs for `consumer`, as (job id, job or None when its body is not
        usable): new ones (`position` ">"), or the consumer's own pending jobs after the id
        `position` ("0": from the start). `GroupMissing` when the group is gone."""
        async with store_errors():
            try:
                reply: Any = await self.blocking.xreadgroup(
                    JOB_GROUP, consumer, {self.keys.jobs: position}, count=count, block=block_ms
                )
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    raise GroupMissing(str(exc)) from exc
                raise
        return [
            (text(entry_id), job_from_entry(entry_id, fields))
            for _stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def ack(self, job_ids: Sequence[str]) -> None:
        async with store_errors():
            await self.redis.xack(self.keys.jobs, JOB_GROUP, *job_ids)
