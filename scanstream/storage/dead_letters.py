"""Dead letters: jobs whose strategy failed for good, kept for operators.

Each job partition keeps its own: a capped stream of records (`PartitionKeys.dead_letters`,
in the partition's slot) written by the worker that gave up (`add`). A letter's id names
its partition like a job's does (`"<partition>/<entry id>"`), and re-driving it queues the
job again on the same partition, in one transaction on that one slot.

Operators list them (`scanstream inspect dead-letters`), re-drive the ones whose
work can still count (`redrive`), or drop them (`drop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from scanstream.ids import is_scan_id
from scanstream.storage.errors import store_errors
from scanstream.storage.events import EventStore
from scanstream.storage.jobs import by_partition, job_fields, job_id, split_job_id
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text

DEAD_LETTER_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str  # the dead-letter entry's id
    job_id: str
    scan_id: str
    strategy: str
    user: str
    attempts: int
    error_type: str
    error: str
    worker: str
    ts: str

    @classmethod
    def from_entry(cls, partition: int, entry_id: Any, fields: Any) -> DeadLetter:
        def f(name: str) -> str:
            return text(fields.get(name.encode(), b""))

        try:
            attempts = int(f("attempts") or 0)
        except ValueError:
            attempts = 0
        return cls(
            id=job_id(partition, text(entry_id)),
            job_id=f("job_id"),
            scan_id=f("scan_id"),
            strategy=f("strategy"),
            user=f("user"),
            attempts=attempts,
            error_type=f("error_type"),
            error=f("error"),
            worker=f("worker"),
            ts=f("ts"),
        )


@dataclass(frozen=True, slots=True)
class Redrive:
    letter_id: str
    outcome: str  # "requeued" | "refused" | "unknown"
    detail: str
    job_id: str | None = None


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, letter: dict[str, str | int]) -> str:
        """Record a dead job on its partition (the one its `job_id` names, else its user's);
        the letter's id."""
        try:
            partition = self.keys.partitions[split_job_id(str(letter.get("job_id")))[0]]
        except (ValueError, IndexError):
            partition = self.keys.jobs_of(str(letter.get("user", "")))
        fields: dict[Any, Any] = dict(letter)
        async with store_errors():
            entry_id = await self.redis.xadd(
                partition.dead_letters, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True
            )
        return job_id(partition.index, text(entry_id))

    async def newest(self, count: int = 100) -> list[DeadLetter]:
        """The newest `count` dead letters of all partitions, oldest first (letters of one
        millisecond in different partitions in no set order)."""
        letters: list[tuple[tuple[int, int], DeadLetter]] = []
        async with store_errors():
            for p in self.keys.partitions:
                raw: Any = await self.redis.xrevrange(p.dead_letters, "+", "-", count=count)
                letters += [
                    (_order(text(i)), DeadLetter.from_entry(p.index, i, f)) for i, f in raw or []
                ]
        letters.sort(key=lambda pair: pair[0])
        return [letter for _, letter in letters[-count:]]

    async def count(self) -> int:
        async with store_errors():
            return sum([int(await self.redis.xlen(p.dead_letters)) for p in self.keys.partitions])

    async def redrive(self, store: EventStore, letter_ids: Sequence[str] | None) -> list[Redrive]:
        """Re-enqueue dead-lettered jobs (`None`: all of them) whose work can still count.

        A scan's log is its only truth and a fold never reopens a terminal strategy, so a job
        is re-driven only while its scan is running and its strategy is not yet terminal
        there (e.g. the final failure was never written). Every other letter is refused with
        the reason and left in place: its failure is final in that scan; a new scan is how to
        run the strategy again. A re-driven letter is removed, so it is never re-driven twice.
        """
        out: list[Redrive] = []
        for letter_id, letter in await self._find(letter_ids):
            if letter is None:
                out.append(Redrive(letter_id, "unknown", "no such dead letter"))
                continue
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
                out.append(await self._requeue(letter))
        return out

    async def _find(self, letter_ids: Sequence[str] | None) -> list[tuple[str, DeadLetter | None]]:
        """The letters named (None: all of them), each with its id; None where there is none."""
        out: list[tuple[str, DeadLetter | None]] = []
        async with store_errors():
            if letter_ids is None:
                for p in self.keys.partitions:
                    raw: Any = await self.redis.xrange(p.dead_letters, "-", "+")
                    letters = [DeadLetter.from_entry(p.index, i, f) for i, f in raw]
                    out += [(letter.id, letter) for letter in letters]
                return out
            for letter_id in letter_ids:
                try:
                    partition, entry_id = split_job_id(letter_id)
                    key = self.keys.partitions[partition].dead_letters
                except (ValueError, IndexError):
                    out.append((letter_id, None))
                    continue
                found: Any = await self.redis.xrange(key, entry_id, entry_id)
                letter = DeadLetter.from_entry(partition, *found[0]) if found else None
                out.append((letter_id, letter))
        return out

    async def _requeue(self, letter: DeadLetter) -> Redrive:
        """Queue the job again and remove the letter: one transaction, on the one slot of
        the letter's partition (a job's partition follows from its scan: the same one)."""
        partition, entry_id = split_job_id(letter.id)
        p = self.keys.partitions[partition]
        async with store_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.xadd(p.jobs, job_fields(letter.scan_id, letter.strategy, letter.user))
            if letter.user:  # counted as running, as a job moved from a lane is
                pipe.hincrby(p.running_jobs, letter.user, 1)
            pipe.xdel(p.dead_letters, entry_id)
            new_entry, *_ = await pipe.execute()
        return Redrive(
            letter.id, "requeued", "queued as a new job", job_id(partition, text(new_entry))
        )

    async def drop(self, letter_ids: Sequence[str] | None) -> int:
        """Delete dead letters (`None`: all). Returns how many were deleted."""
        deleted = 0
        async with store_errors():
            if letter_ids is None:
                for p in self.keys.partitions:
                    deleted += int(await self.redis.xlen(p.dead_letters))
                    await self.redis.delete(p.dead_letters)
                return deleted
            for partition, entry_ids in _valid_by_partition(letter_ids, len(self.keys.partitions)):
                key = self.keys.partitions[partition].dead_letters
                deleted += int(await self.redis.xdel(key, *entry_ids))
        return deleted


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _valid_by_partition(letter_ids: Sequence[str], partitions: int) -> list[tuple[int, list[str]]]:
    """Letter ids that name an existing partition, grouped by it; others name no letter."""
    valid = []
    for letter_id in letter_ids:
        try:
            partition, _ = split_job_id(letter_id)
        except ValueError:
            continue
        if partition < partitions:
            valid.append(letter_id)
    return sorted(by_partition(valid).items())
