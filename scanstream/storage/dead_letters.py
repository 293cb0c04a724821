"""Dead letters: jobs whose strategy failed for good, kept for operators.

`<prefix>:jobs:dead` is a capped stream of records written by the worker that gave up
(`add`). Operators list them (`scanstream inspect dead-letters`), re-drive the ones whose
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
from scanstream.storage.jobs import job_fields
from scanstream.storage.keys import Keys
from scanstream.storage.replies import text

DEAD_LETTER_MAXLEN = 100_000


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
        fields: dict[Any, Any] = dict(letter)
        async with store_errors():
            entry_id = await self.redis.xadd(
                self.keys.dead_letters, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True
            )
        return text(entry_id)

    async def newest(self, count: int = 100) -> list[DeadLetter]:
        """The newest `count` dead letters, oldest first."""
        async with store_errors():
            raw: Any = await self.redis.xrevrange(self.keys.dead_letters, "+", "-", count=count)
        return [DeadLetter.from_entry(i, f) for i, f in reversed(raw or [])]

    async def count(self) -> int:
        async with store_errors():
            return int(await self.redis.xlen(self.keys.dead_letters))

    async def redrive(self, store: EventStore, letter_ids: Sequence[str] | None) -> list[Redrive]:
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
                raw = await self.redis.xrange(self.keys.dead_letters, "-", "+")
            else:
                pipe = self.redis.pipeline(transaction=False)
                for letter_id in letter_ids:
                    pipe.xrange(self.keys.dead_letters, letter_id, letter_id)
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
                    pipe = self.redis.pipeline(transaction=True)
                    pipe.xadd(self.keys.jobs, job_fields(letter.scan_id, letter.strategy))
                    pipe.xdel(self.keys.dead_letters, letter.id)
                    job_id, _ = await pipe.execute()
                out.append(Redrive(letter.id, "requeued", "queued as a new job", text(job_id)))
        return out

    async def drop(self, letter_ids: Sequence[str] | None) -> int:
        """Delete dead letters (`None`: all). Returns how many were deleted."""
        async with store_errors():
            if letter_ids is None:
                n = int(await self.redis.xlen(self.keys.dead_letters))
                await self.redis.delete(self.keys.dead_letters)
                return n
            return (
                int(await self.redis.xdel(self.keys.dead_letters, *letter_ids)) if letter_ids else 0
            )
