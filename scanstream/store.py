"""The event store: the only module that reads or writes a scan's stream.

Every Redis error is turned into `StoreUnavailable` here, at the one boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.events import LogEntry
from scanstream.ids import scan_created_ms
from scanstream.keys import Keys

REDIS_FAULTS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


def _lua(name: str) -> str:
    return resources.files("scanstream").joinpath("lua", name).read_text()


@asynccontextmanager
async def store_errors() -> AsyncIterator[None]:
    """Turn connection-level Redis failures into StoreUnavailable."""
    try:
        yield
    except REDIS_FAULTS as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis_errors.BusyLoadingError as exc:
        raise StoreUnavailable("Redis is loading its data set") from exc


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a fenced strategy write did: `ok`, `ended`, `done`, `stale` or `missing`."""

    status: str
    attempt: int = 0
    entry_id: str | None = None
    terminal: str | None = None
    requested: bytes | None = None  # start only: the data of scan.requested

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _entries(raw: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[LogEntry]:
    return [ev.decode_entry(entry_id, fields) for entry_id, fields in raw]


class EventStore:
    def __init__(self, redis: Redis, keys: Keys, *, retention_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = max(1, int(retention_s))
        self._create = redis.register_script(_lua("create_scan.lua"))
        self._strategy_write = redis.register_script(_lua("strategy_write.lua"))
        self._end = redis.register_script(_lua("end_scan.lua"))

    # -- writes -----------------------------------------------------------------------

    async def create_scan(self, scan_id: str, requested: ev.ScanRequested) -> str | None:
        """Append scan.requested (once). Returns its entry id, or None if it already existed."""
        k = self.keys.scan(scan_id)
        async with store_errors():
            result = await self._create(
                keys=[k.events, k.fence],
                args=[ev.encode(requested), len(requested.strategies), scan_created_ms(scan_id)],
            )
        return None if result == b"exists" else result.decode()

    async def start_strategy(self, scan_id: str, strategy: str, worker: str) -> WriteOutcome:
        """Append strategy.started with a newly allocated attempt number (the fencing token)."""
        body = {"event_id": ev.new_event_id(), "v": ev.SCHEMA_VERSION, "ts": ev.now_rfc3339(),
                "strategy": strategy, "worker": worker}
        return await self._write(scan_id, "start", strategy, 0,
                                 [("strategy.started", ev.encode_obj(body))])

    async def append_strategy_events(
        self, scan_id: str, strategy: str, attempt: int, events: Sequence[ev.Event]
    ) -> WriteOutcome:
        """Append progress / opportunity events of the current attempt."""
        return await self._write(scan_id, "append", strategy, attempt,
                                 [(ev.type_of(e), ev.encode(e)) for e in events])

    async def finish_strategy(
        self, scan_id: str, strategy: str, attempt: int, events: Sequence[ev.Event]
    ) -> WriteOutcome:
        """Append the attempt's last events (completed or failed); may end the scan."""
        return await self._write(scan_id, "finish", strategy, attempt,
                                 [(ev.type_of(e), ev.encode(e)) for e in events])

    async def _write(
        self, scan_id: str, mode: str, strategy: str, attempt: int,
        pairs: Sequence[tuple[str, bytes]],
    ) -> WriteOutcome:
        k = self.keys.scan(scan_id)
        args: list[Any] = [mode, strategy, attempt, self.retention_s,
                           ev.new_event_id(), ev.now_rfc3339()]
        for type_, data in pairs:
            args += [type_, data]
        async with store_errors():
            status, second, terminal = await self._strategy_write(keys=[k.events, k.fence], args=args)
        status = status.decode()
        if mode == "start":
            return WriteOutcome(status, attempt=int(second), requested=terminal or None)
        entry_id = second.decode() if isinstance(second, bytes) else None
        return WriteOutcome(status, attempt=attempt if status == "ok" else int(second or 0),
                            entry_id=entry_id, terminal=terminal.decode() if terminal else None)

    async def end_scan(
        self, scan_id: str, terminal_type: str, *, reason: str | None = None,
        before: Sequence[ev.Event] = (),
    ) -> tuple[str, str]:
        """End the scan from outside (cancel, deadline). Returns (status, entry id or type)."""
        k = self.keys.scan(scan_id)
        args: list[Any] = [terminal_type, ev.new_event_id(), ev.now_rfc3339(),
                           self.retention_s, reason or ""]
        for e in before:
            args += [ev.type_of(e), ev.encode(e)]
        async with store_errors():
            status, detail = await self._end(keys=[k.events, k.fence], args=args)
        return status.decode(), detail.decode()

    # -- reads ------------------------------------------------------------------------

    async def read(self, scan_id: str, after: str | None = None, count: int | None = None) -> list[LogEntry]:
        """Entries after `after` (exclusive), or from the start."""
        start = f"({after}" if after else "-"
        async with store_errors():
            raw = await self.redis.xrange(self.keys.events(scan_id), start, "+", count=count)
        return _entries(raw)

    async def read_if_exists(self, scan_id: str, after: str | None) -> list[LogEntry] | None:
        """Entries after `after`, or None when the stream does not exist (never was, or expired).

        One round trip: the status path's whole cost in the steady state.
        """
        key = self.keys.events(scan_id)
        start = f"({after}" if after else "-"
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(key)
            pipe.xrange(key, start, "+")
            exists, raw = await pipe.execute()
        return _entries(raw) if exists else None

    async def last_entry(self, scan_id: str) -> LogEntry | None:
        async with store_errors():
            raw = await self.redis.xrevrange(self.keys.events(scan_id), "+", "-", count=1)
        return _entries(raw)[0] if raw else None

    async def ping(self) -> None:
        async with store_errors():
            await self.redis.ping()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]
