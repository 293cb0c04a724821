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

import time
from collections.abc import Iterable, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.errors import ScanstreamError
from scanstream.ids import is_scan_id
from scanstream.storage.errors import store_errors
from scanstream.storage.index import Listing
from scanstream.storage.keys import JOB_GROUP, Keys, PartitionKeys
from scanstream.storage.replication import is_cluster
from scanstream.storage.replies import text
from scanstream.storage.scripts import Call, pipelined, register, script_call

MAX_PRIORITY = 9  # a scan's `priority`: 0 (default) to 9, higher first among a user's own
# Undelivered jobs each partition's stream holds, beyond what a read takes: enough to wake
# idle workers at once, few enough that a newcomer waits behind little of others' work.
READY_DEPTH = 8


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
    __slots__ = ("deliveries", "id", "scan_id", "strategy", "user")

    def __init__(
        self, id: str, scan_id: str, strategy: str, deliveries: int = 1, user: str = ""
    ) -> None:
        self.id = id  # "<partition>/<entry id>"
        self.scan_id = scan_id
        self.strategy = strategy
        self.deliveries = deliveries
        self.user = user  # whose scan: its running count drops when the job is acknowledged

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.scan_id}, {self.strategy}, deliveries={self.deliveries})"


def job_fields(scan_id: str, strategy: str, user: str = "") -> dict[Any, Any]:
    return {"scan_id": scan_id, "strategy": strategy, "user": user}


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
    user = fields.get(b"user", b"").decode(errors="replace")
    return Job(job_id(partition, text(entry_id)), scan_id, strategy, deliveries, user)


def lane_band(priority: int) -> int:
    """The band of a waiting job's lane score: higher priority first (band 0). Within a
    band the script orders jobs by their arrival at Redis (lua/job_lanes.lua), one counter
    per partition, so two scans of the same millisecond, or of API processes whose clocks
    differ, still run oldest first."""
    return MAX_PRIORITY - priority


class JobQueue:
    """The queue as the API (enqueue) and the workers (read, ack) use it.

    Fair share (lua/job_lanes.lua): enqueued jobs wait in their user's lane, and move to
    the partition's job stream, users taking turns, as workers can take them; a user with
    `max_running` jobs not yet acknowledged waits while others go first.

    `blocking`: a client of its own for reads that wait (XREADGROUP BLOCK), so a long
    BLOCK never holds a connection of the hot pool (see storage/connection.py).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        blocking: Redis | None = None,
        max_running: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.blocking = blocking or redis
        self.max_running = max_running
        self._lanes = register(redis, "job_lanes.lua")

    @property
    def partitions(self) -> int:
        return self.keys.partition_count

    @property
    def one_node(self) -> bool:
        """Every partition on one Redis (not a cluster): a read of one partition may take
        acknowledgements of any partition along (`read`)."""
        return not is_cluster(self.redis)

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

    def lanes_call(self, partition: PartitionKeys, mode: str, *args: Any, depth: int = 0) -> Call:
        """One call of lua/job_lanes.lua on `partition`."""
        return script_call(
            self._lanes,
            [partition.jobs, partition.ring, partition.running_jobs, partition.arrivals],
            [
                mode,
                partition.lane_prefix,
                max(depth, READY_DEPTH),
                self.max_running,
                JOB_GROUP,
                *args,
            ],
        )

    def enqueue_calls(
        self, scan_id: str, user_id: str, strategies: Sequence[str], priority: int = 0
    ) -> list[Call]:
        """One job per strategy, in the user's lane on the user's partition."""
        lane_args = (user_id, scan_id, lane_band(priority), *strategies)
        return [self.lanes_call(self.keys.jobs_of(user_id), "enqueue", *lane_args)]

    async def enqueue(
        self,
        scan_id: str,
        user_id: str,
        strategies: Sequence[str],
        *,
        priority: int = 0,
        listing: Listing | None = None,
    ) -> None:
        """Queue one job per strategy; with `listing`, list the scan for its user in the
        same round trip (`ScanIndex.listing`)."""
        calls = listing.calls() if listing is not None else []
        calls += self.enqueue_calls(scan_id, user_id, strategies, priority)
        async with store_errors():
            await pipelined(self.redis, calls)

    async def read(
        self,
        partition: int,
        consumer: str,
        count: int,
        *,
        position: str = ">",
        block_ms: int | None = None,
        acks: Sequence[tuple[str, str]] = (),
    ) -> list[tuple[str, Job | None]]:
        """Up to `count` jobs of one partition for `consumer`, as (job id, job or None when
        its body is not usable): new ones (`position` ">"), or the consumer's own pending
        jobs after the entry id `position` ("0": from the start). `GroupMissing` when the
        group is gone.

        A read of new jobs that does not block first moves waiting jobs from the lanes to
        the stream, users taking turns, and acknowledges `acks` ((job id, user) pairs, as
        `ack` does) in the same round trip: of any partition on one Redis (`one_node`);
        on a cluster, of this partition only, whose node the read needs anyway (another
        partition's node in trouble must not fail this read). Other reads take no `acks`.
        When the read fails, whether they were acknowledged is unknown: send them again
        (acknowledging twice is harmless)."""
        p = self.keys.partitions[partition]
        if acks and not (block_ms is None and position == ">"):
            raise ValueError("only a read of new jobs that does not block takes acks")
        async with store_errors():
            try:
                if block_ms is None and position == ">":
                    grouped = _ack_pairs(acks)
                    own = grouped.pop(partition, None)
                    calls = [
                        self.lanes_call(self.keys.partitions[i], "ack", *pairs)
                        for i, pairs in grouped.items()
                    ]
                    # This partition's acknowledgements (if any), then the dispatch that
                    # fills its stream for this read.
                    if own:
                        calls.append(self.lanes_call(p, "ack", *own, depth=count))
                    else:
                        calls.append(self.lanes_call(p, "dispatch", depth=count))
                    calls.append(
                        (
                            None,
                            (
                                "XREADGROUP",
                                "GROUP",
                                JOB_GROUP,
                                consumer,
                                "COUNT",
                                count,
                                "STREAMS",
                                p.jobs,
                                ">",
                            ),
                        )
                    )
                    reply = (await pipelined(self.redis, calls))[-1]
                else:
                    reply = await self.blocking.xreadgroup(
                        JOB_GROUP, consumer, {p.jobs: position}, count=count, block=block_ms
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

    async def others_present(self, me: str, window_ms: int) -> int | None:
        """Say that worker `me` is here, and count the other workers that said so within
        the last `window_ms` (`Keys.workers`; one round trip). None when Redis refuses
        the write (full with noeviction, an ACL): the count is advisory, so nothing
        fails for it."""
        now_ms = int(time.time() * 1000)
        key = self.keys.workers
        calls: list[Call] = [
            (None, ("ZADD", key, now_ms, me)),
            (None, ("ZREMRANGEBYSCORE", key, "-inf", now_ms - window_ms)),
            (None, ("ZCARD", key)),
            (None, ("PEXPIRE", key, 2 * window_ms)),  # gone once every worker is
        ]
        async with store_errors():
            replies = await pipelined(self.redis, calls, strict=False)
        if any(isinstance(r, redis_errors.ResponseError) for r in replies[:3]):
            return None
        return max(0, int(replies[2]) - 1)

    async def ack(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Acknowledge (job id, user) pairs; each user's running count drops, and waiting
        jobs take the room (one script call per partition, one round trip)."""
        calls = [
            self.lanes_call(self.keys.partitions[p], "ack", *pairs)
            for p, pairs in _ack_pairs(jobs).items()
        ]
        async with store_errors():
            await pipelined(self.redis, calls)

    async def rebalance(self) -> None:
        """Recount each partition's running jobs per user from its stream (a count that
        drifted, e.g. an acknowledgement lost to a failover, heals), then fill the
        streams from the lanes (the reaper, each round)."""
        calls: list[Call] = []
        for p in self.keys.partitions:
            calls += [self.lanes_call(p, "recount"), self.lanes_call(p, "dispatch")]
        async with store_errors():
            await pipelined(self.redis, calls)


def _ack_pairs(jobs: Iterable[tuple[str, str]]) -> dict[int, list[str]]:
    """(job id, user) pairs as the lanes script's ack takes them: per partition, entry id
    and user, flat."""
    grouped: dict[int, list[str]] = {}
    for value, user in jobs:
        partition, entry_id = split_job_id(value)
        grouped.setdefault(partition, []).extend((entry_id, user))
    return grouped


def _stream_replies(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply as (key, entries), for RESP2 (a list) and RESP3 (a map)."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else list(reply)
