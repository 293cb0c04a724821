"""The strategy job stream, its consumer group, and the dead letters beside it.

One entry per (scan, strategy) on `<prefix>:jobs`, read by the `strategy-workers` group.
The job stream lives outside the scan's hash slot, so "append result, then XACK" cannot
be atomic: a redelivery after a crash between the two is harmless because every write
to the scan is fenced (see lua/strategy_write.lua) and every fold ignores repeats.

Upkeep (run by every worker's reaper, one worker per round, and by `scanstream inspect`):
trimming acknowledged entries (`trim`), removing consumers that are gone
(`prune_consumers`). Operators list and re-drive dead letters (`dead_letters`, `redrive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream.ids import is_scan_id
from scanstream.storage.connection import text
from scanstream.storage.events import EventStore, lua_source, store_errors
from scanstream.storage.keys import JOB_GROUP, Keys

LAG_COUNT_CAP = 10_000  # computing lag by reading entries (Redis < 7) stops here
DEAD_LETTER_MAXLEN = 100_000


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


# -- upkeep -------------------------------------------------------------------------------


async def trim(redis: Redis, keys: Keys) -> int:
    """Drop acknowledged job entries, never a pending or undelivered one. Returns how many."""
    async with store_errors():
        trimmed, _threshold = await redis.eval(lua_source("trim_jobs.lua"), 1, keys.jobs)
    return int(trimmed)


async def prune_consumers(redis: Redis, keys: Keys, min_idle_ms: int) -> list[str]:
    """Remove consumers with no pending job that have not read for `min_idle_ms`."""
    async with store_errors():
        try:
            removed = await redis.eval(
                lua_source("prune_consumers.lua"), 1, keys.jobs, JOB_GROUP, int(min_idle_ms)
            )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
    return [text(x) for x in removed]


# -- dead letters -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # the dead-letter entry's id
    job_id: str
    scan_id: str
    strategy: str
    attempts: int
    error_type: str
    error: str
    worker: str
    ts: str

    @classmethod
    def from_entry(cls, entry_id: Any, fields: Any) -> DeadLetter:
        def f(name: str) -> str:
            return text(fields.get(name.encode(), b""))

        try:
            attempts = int(f("attempts") or 0)
        except ValueError:
            attempts = 0
        return cls(
            id=text(entry_id),
            job_id=f("job_id"),
            scan_id=f("scan_id"),
            strategy=f("strategy"),
            attempts=attempts,
            error_type=f("error_type"),
            error=f("error"),
            worker=f("worker"),
            ts=f("ts"),
        )


async def add_dead_letter(redis: Redis, keys: Keys, letter: dict[str, str | int]) -> str:
    fields: dict[Any, Any] = dict(letter)
    async with store_errors():
        entry_id = await redis.xadd(
            keys.dead_letters, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True
        )
    return text(entry_id)


async def dead_letters(redis: Redis, keys: Keys, count: int = 100) -> list[DeadLetter]:
    """The newest `count` dead letters, oldest first."""
    async with store_errors():
        raw: Any = await redis.xrevrange(keys.dead_letters, "+", "-", count=count)
    return [DeadLetter.from_entry(i, f) for i, f in reversed(raw or [])]


async def dead_letter_count(redis: Redis, keys: Keys) -> int:
    async with store_errors():
        return int(await redis.xlen(keys.dead_letters))


@dataclass(frozen=True, slots=True)
class Redrive:
    letter_id: str
    outcome: str  # "requeued" | "refused" | "unknown"
    detail: str
    job_id: str | None = None


async def redrive(
    redis: Redis, keys: Keys, store: EventStore, letter_ids: Sequence[str] | None
) -> list[Redrive]:
    """Re-enqueue dead-lettered jobs (`None`: all of them) whose work can still count.

    A scan's log is its only truth and a fold never reopens a terminal strategy, so a job
    is re-driven only while its scan is running and its strategy is not yet terminal
    there (e.g. the final failure was never written). Every other letter is refused with
    the reason and left in place: its failure is final in that scan; a new scan is how to
    run the strategy again. A re-driven letter is removed, so it is never re-driven twice.
    """
    raw: Any
    async with store_errors():
        if letter_ids is None:
            raw = await redis.xrange(keys.dead_letters, "-", "+")
        else:
            pipe = redis.pipeline(transaction=False)
            for letter_id in letter_ids:
                pipe.xrange(keys.dead_letters, letter_id, letter_id)
            raw = [
                r[0] if r else (letter_id, None)
                for letter_id, r in zip(letter_ids, await pipe.execute(), strict=True)
            ]
    out: list[Redrive] = []
    for entry_id, fields in raw:
        if fields is None:
            out.append(Redrive(text(entry_id), "unknown", "no such dead letter"))
            continue
        letter = DeadLetter.from_entry(entry_id, fields)
        if not is_scan_id(letter.scan_id) or not letter.strategy:
            out.append(Redrive(letter.id, "refused", "the letter names no valid scan/strategy"))
            continue
        state, detail = await store.strategy_state(letter.scan_id, letter.strategy)
        if state == "missing":
            out.append(Redrive(letter.id, "refused", "the scan no longer exists (expired)"))
        elif state == "ended":
            out.append(Redrive(letter.id, "refused", f"the scan has ended ({detail})"))
        elif state == "foreign":
            out.append(Redrive(letter.id, "refused", "the scan has no such strategy"))
        elif state == "done":
            out.append(
                Redrive(
                    letter.id,
                    "refused",
                    f"the strategy is already {detail} in the scan's log; "
                    "start a new scan to run it again",
                )
            )
        else:
            async with store_errors():
                pipe = redis.pipeline(transaction=True)
                pipe.xadd(keys.jobs, job_fields(letter.scan_id, letter.strategy))
                pipe.xdel(keys.dead_letters, letter.id)
                job_id, _ = await pipe.execute()
            out.append(Redrive(letter.id, "requeued", "queued as a new job", text(job_id)))
    return out


async def drop_dead_letters(redis: Redis, keys: Keys, letter_ids: Sequence[str] | None) -> int:
    """Delete dead letters (`None`: all). Returns how many were deleted."""
    async with store_errors():
        if letter_ids is None:
            n = int(await redis.xlen(keys.dead_letters))
            await redis.delete(keys.dead_letters)
            return n
        return int(await redis.xdel(keys.dead_letters, *letter_ids)) if letter_ids else 0


# -- the group as operators see it ----------------------------------------------------------


@dataclass
class GroupInfo:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None  # entries not yet delivered to the group; None if unknown
    lag_capped: bool = False  # counted up to a cap only (Redis < 7), and it was reached


@dataclass
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass
class PendingJob:
    job_id: str
    consumer: str
    idle_ms: int
    deliveries: int
    scan_id: str | None = None
    strategy: str | None = None


@dataclass
class JobStreamInfo:
    length: int
    groups: list[GroupInfo] = field(default_factory=list)
    consumers: list[ConsumerInfo] = field(default_factory=list)


async def stream_info(redis: Redis, keys: Keys, lag_cap: int = LAG_COUNT_CAP) -> JobStreamInfo:
    """Length, groups with lag (XINFO's own on Redis 7+, else counted), consumers."""
    async with store_errors():
        length = int(await redis.xlen(keys.jobs))
        if length == 0 and not await redis.exists(keys.jobs):
            return JobStreamInfo(0)
        groups_raw = await redis.xinfo_groups(keys.jobs)
        info = JobStreamInfo(length)
        for g in groups_raw:
            name = text(g["name"])
            last = text(g["last-delivered-id"])
            lag = g.get("lag")
            capped = False
            if lag is None:
                after: Any = await redis.xrange(keys.jobs, f"({last}", "+", count=lag_cap + 1)
                lag, capped = min(len(after), lag_cap), len(after) > lag_cap
            info.groups.append(
                GroupInfo(name, int(g["consumers"]), int(g["pending"]), last, int(lag), capped)
            )
            if name == JOB_GROUP:
                for c in await redis.xinfo_consumers(keys.jobs, name):
                    info.consumers.append(
                        ConsumerInfo(text(c["name"]), int(c["pending"]), int(c["idle"]))
                    )
    return info


async def pending_jobs(redis: Redis, keys: Keys, count: int = 100) -> list[PendingJob]:
    """The oldest `count` pending jobs with owner, idle time, deliveries and what they are."""
    async with store_errors():
        try:
            rows = await redis.xpending_range(keys.jobs, JOB_GROUP, "-", "+", count)
        except redis_errors.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        out = [
            PendingJob(
                text(r["message_id"]),
                text(r["consumer"]),
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows
        ]
        if out:
            pipe = redis.pipeline(transaction=False)
            for p in out:
                pipe.xrange(keys.jobs, p.job_id, p.job_id)
            for p, body in zip(out, await pipe.execute(), strict=True):
                if body:
                    p.scan_id = text(body[0][1].get(b"scan_id", b"")) or None
                    p.strategy = text(body[0][1].get(b"strategy", b"")) or None
    return out
