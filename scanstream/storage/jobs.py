"""The strategy job queue: one job per (scan, strategy), on the job stream of the scan's
partition (`keys.py`), read by that partition's `strategy-workers` consumer group.

A job's id names its partition and its entry: `"<partition>/<entry id>"` (entry ids of
two streams can be equal). Every call here that takes ids groups them by partition, so
each command names one stream: one slot on a cluster.

The job stream lives outside the scan's hash slot, so "append result, then XACK" cannot
be atomic: a redelivery after a crash between the two is harmless because every write
to the scan is fenced (see lua/strategy_write.lua) and every fold ignores repeats.

Beside the queue itself (enqueue, read, ack): claims on running jobs (`claims.py`),
upkeep (`upkeep.py`), dead letters (`dead_letters.py`), and what operators see
(`job_info.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
from scanstream.storage.scripts import Call, pipelined


class GroupMissing(ScanstreamError):
    """The job stream has no consumer group (Redis lost its data): `ensure_group` again."""


def job_id(partition: int, entry_id: str) -> str:
    return f"{partition}/{entry_id}"


def split_job_id(value: str) -> tuple[int, str]:
    """(partition, entry id) of a job id; ValueError for anything else."""
    partition, _, entry_id = value.partition("/")
    if not partition.isdigit() or not entry_id:
        raise ValueError(f"not a job id: {value!r}")
    return int(partition), entry_id


def by_partition(job_ids: Iterable[str]) -> dict[int, list[str]]:
    """Entry ids grouped by partition."""
    out: dict[int, list[str]] = {}
    for value in job_ids:
        partition, entry_id = split_job_id(value)
        out.setdefault(partition, []).append(entry_id)
    return out


class Job:
    __slots__ = ("deliveries", "id", "scan_id", "strategy")

    def __init__(self, id: str, scan_id: str, strategy: str, deliveries: int = 1) -> None:
        self.id = id  # "<partition>/<entry id>"
        self.scan_id = scan_id
        self.strategy = strategy
        self.deliveries = deliveries

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.scan_id}, {self.strategy}, deliveries={self.deliveries})"


def job_fields(scan_id: str, strategy: str) -> dict[Any, Any]:
    return {"scan_id": scan_id, "strategy": strategy}


def job_from_entry(
    partition: int, entry_id: bytes | str, fields: dict[bytes, bytes] | None, deliveries: int = 1
) -> Job | None:
    """A Job, or None for an entry without a usable body."""
    if not fields or b"scan_id" not in fields or b"strategy" not in fields:
        return None
    scan_id = fields[b"scan_id"].decode(errors="replace")
    if not is_scan_id(scan_id):
        return None
    strategy = fields[b"strategy"].decode(errors="replace")
    return Job(job_id(partition, text(entry_id)), scan_id, strategy, deliveries)


class JobQueue:
    """The queue as the API (enqueue) and the workers (read, ack) use it.

    `blocking`: a client of its own for reads that wait (XREADGROUP BLOCK), so a long
    BLOCK never holds a connection of the hot pool (see storage/connection.py).
    """

    def __init__(self, redis: Redis, keys: Keys, *, blocking: Redis | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.blocking = blocking or redis

    @property
    def partitions(self) -> int:
        return self.keys.partition_count

    async def ensure_group(self) -> None:
        """Create every partition's job stream and consumer group if missing (idempotent)."""
        calls: list[Call] = [
            (None, ("XGROUP", "CREATE", p.jobs, JOB_GROUP, "0", "MKSTREAM"))
            for p in self.keys.partitions
        ]
        async with store_errors():
            for reply in await pipelined(self.redis, calls, strict=False):
                if isinstance(reply, redis_errors.ResponseError) and "BUSYGROUP" in str(reply):
                    continue
                if isinstance(reply, Exception):
                    raise reply

    async def enqueue(
        self, scan_id: str, strategies: Sequence[str], *, listing: Listing | None = None
    ) -> None:
        """Queue one job per strategy on the scan's partition; with `listing`, list the
        scan for its user in the same round trip (`ScanIndex.listing`)."""
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            if listing is not None:
                listing.add_into(pipe)
            self.enqueue_into(pipe, scan_id, strategies)
            await pipe.execute()

    def enqueue_into(self, pipe: Pipeline, scan_id: str, strategies: Sequence[str]) -> None:
        """On a pipeline of the storage layer: one job per strategy, on the scan's partition."""
        stream = self.keys.partition_of(scan_id).jobs
        for name in strategies:
            pipe.xadd(stream, job_fields(scan_id, name))

    async def read(
        self,
        partition: int,
        consumer: str,
        count: int,
        *,
        position: str = ">",
        block_ms: int | None = None,
    ) -> list[tuple[str, Job | None]]:
        """Up to `count` jobs of one partition for `consumer`, as (job id, job or None when
        its body is not usable): new ones (`position` ">"), or the consumer's own pending
        jobs after the entry id `position` ("0": from the start). `GroupMissing` when the
        group is gone."""
        stream = self.keys.partitions[partition].jobs
        async with store_errors():
            try:
                reply: Any = await self.blocking.xreadgroup(
                    JOB_GROUP, consumer, {stream: position}, count=count, block=block_ms
                )
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    raise GroupMissing(str(exc)) from exc
                raise
        return [
            (job_id(partition, text(entry_id)), job_from_entry(partition, entry_id, fields))
            for _stream, entries in _stream_replies(reply)
            for entry_id, fields in entries
        ]

    async def ack(self, job_ids: Sequence[str]) -> None:
        calls: list[Call] = [
            (None, ("XACK", self.keys.partitions[p].jobs, JOB_GROUP, *entry_ids))
            for p, entry_ids in by_partition(job_ids).items()
        ]
        async with store_errors():
            await pipelined(self.redis, calls)


def _stream_replies(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply as (key, entries), for RESP2 (a list) and RESP3 (a map)."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else list(reply)
