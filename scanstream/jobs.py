"""The strategy job stream and its consumer group.

One entry per (scan, strategy) on `<prefix>:jobs`, read by the `strategy-workers` group.
The job stream lives outside the scan's hash slot, so "append result, then XACK" cannot
be atomic: a redelivery after a crash between the two is harmless because every write
to the scan is fenced (see lua/strategy_write.lua) and every fold ignores repeats.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.keys import JOB_GROUP, Keys
from scanstream.store import store_errors


class Job:
    __slots__ = ("entry_id", "scan_id", "strategy", "deliveries")

    def __init__(self, entry_id: str, scan_id: str, strategy: str, deliveries: int = 1) -> None:
        self.entry_id = entry_id
        self.scan_id = scan_id
        self.strategy = strategy
        self.deliveries = deliveries

    def __repr__(self) -> str:
        return f"Job({self.entry_id}, {self.scan_id}, {self.strategy}, deliveries={self.deliveries})"


def job_fields(scan_id: str, strategy: str) -> dict[str, str]:
    return {"scan_id": scan_id, "strategy": strategy}


async def ensure_group(redis: Redis, keys: Keys) -> None:
    """Create the job stream and its consumer group if missing (idempotent)."""
    async with store_errors():
        try:
            await redis.xgroup_create(keys.jobs, JOB_GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def enqueue_into(pipe: object, keys: Keys, scan_id: str, strategies: Sequence[str]) -> None:
    """Queue one job per strategy on a pipeline the caller executes."""
    for name in strategies:
        pipe.xadd(keys.jobs, job_fields(scan_id, name))  # type: ignore[attr-defined]
