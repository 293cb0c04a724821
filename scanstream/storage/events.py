"""The event store: every read and write of a scan's stream and its fence.

A scan is three keys under its own hash tag (`storage/keys.py`): the stream, the only
source of truth; the fence, the coordination hash the write scripts decide with; and the
write tokens. Writes go through one fenced Lua script each (`storage/lua/`). Python
encodes every event body and hands each script what it needs to know of an event (its
note, see `fence_note`), the schema version and the strategy names; the scripts never
parse a body. They fence, count, and choose the one terminal event, whose body is the
only one they build: its counts live in the fence alone. Reads are XRANGE pages, decoded
with the one codec (`scanstream/events.py`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.errors import StoreUnavailable
from scanstream.events import LogEntry
from scanstream.ids import scan_created_ms
from scanstream.storage.batcher import PipelineBatcher
from scanstream.storage.errors import store_errors
from scanstream.storage.keys import Keys
from scanstream.storage.replication import replicated
from scanstream.storage.replies import entries, text
from scanstream.storage.scripts import pipelined, register, script_call

FORGET_TIMEOUT_S = 2.0  # the running-set upkeep after an end never holds its caller longer


def new_write_token() -> str:
    """A token for one fenced write, kept across its re-sends (see `write_strategy`)."""
    return os.urandom(12).hex()


class _Id(msgspec.Struct):
    id: str


class _Found(msgspec.Struct):
    opportunity: _Id


class _Failed(msgspec.Struct):
    final: bool = False


_found = msgspec.json.Decoder(_Found)
_failed = msgspec.json.Decoder(_Failed)


def fence_note(type_: str, data: bytes) -> str:
    """What the write script needs to know of an encoded event: the opportunity id of an
    opportunity.found (the fence counts each id once per scan), "final" for a
    strategy.failed that no retry follows (the strategy is then terminal), else ""."""
    if type_ == "opportunity.found":
        return _found.decode(data).opportunity.id
    if type_ == "strategy.failed" and _failed.decode(data).final:
        return "final"
    return ""


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a fenced strategy write did: `ok`, `ended`, `done`, `stale` or `missing` (no
    such scan, or no such strategy in it)."""

    status: str
    attempt: int = 0
    entry_id: str | None = None
    terminal: str | None = None
    requested: bytes | None = None  # start only: the data of scan.requested

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class EventStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention_s: float,
        durable_replicas: int = 0,
        max_entries: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = max(1, int(retention_s))
        self.durable_replicas = durable_replicas  # see storage/replication.py
        # Past this many entries, a scan's progress events are dropped (lua/strategy_write.lua).
        self.max_entries = max_entries
        self._create = register(redis, "create_scan.lua")
        self._strategy_write = register(redis, "strategy_write.lua")
        self._end = register(redis, "end_scan.lua")
        # Strategy writes (and the running-set upkeep after them) made by concurrent tasks
        # in one event-loop turn share one pipelined round trip; each stays its own fenced
        # script call (see storage/batcher.py).
        self._writes = PipelineBatcher(redis)
        # Status reads of concurrent requests share one pipelined round trip too; each
        # request still waits only for its own reply, by its own deadline.
        self._reads = PipelineBatcher(redis, detached=True)

    # -- writes -----------------------------------------------------------------------

    async def create_scan(self, scan_id: str, requested: ev.ScanRequested) -> str | None:
        """Append scan.requested (once). Returns its entry id, or None if it already existed.

        In the same round trip, and before the scan exists, the scan joins the running set
        of its partition (`PartitionKeys.running`) that the deadline reaper sweeps: a
        caller that dies right after this call, before queueing the jobs, still leaves a
        scan that ends by its deadline instead of one that stays `queued` for ever.
        """
        k = self.keys.scan(scan_id)
        created_ms = scan_created_ms(scan_id)
        running = self.keys.partition_of(scan_id).running
        args = [ev.encode(requested), len(requested.strategies), created_ms]
        calls = [
            (None, ("ZADD", running, "NX", created_ms, scan_id)),
            script_call(self._create, [k.events, k.fence], [*args, *requested.strategies]),
        ]
        async with store_errors():
            _, result = await pipelined(self.redis, calls)
        return None if result == b"exists" else result.decode()

    async def start_strategy(
        self, scan_id: str, strategy: str, worker: str, *, token: str = ""
    ) -> WriteOutcome:
        """Append strategy.started with a newly allocated attempt number (the fencing token)."""
        body = {
            "event_id": ev.new_event_id(),
            "v": ev.SCHEMA_VERSION,
            "ts": ev.now_rfc3339(),
            "strategy": strategy,
            "worker": worker,
        }
        pairs = [("strategy.started", ev.encode_obj(body))]
        return await self.write_strategy(scan_id, "start", strategy, 0, pairs, token=token)

    async def append_strategy_events(
        self, scan_id: str, strategy: str, attempt: int, events: Sequence[ev.Event]
    ) -> WriteOutcome:
        """Append progress / opportunity events of the current attempt."""
        return await self.write_strategy(scan_id, "append", strategy, attempt, ev.pairs(events))

    async def finish_strategy(
        self,
        scan_id: str,
        strategy: str,
        attempt: int,
        events: Sequence[ev.Event],
        *,
        token: str = "",
    ) -> WriteOutcome:
        """Append the attempt's last events (completed or failed); may end the scan."""
        return await self.write_strategy(
            scan_id, "finish", strategy, attempt, ev.pairs(events), token=token
        )

    async def write_strategy(
        self,
        scan_id: str,
        mode: str,
        strategy: str,
        attempt: int,
        pairs: Sequence[tuple[str, bytes]],
        *,
        token: str = "",
    ) -> WriteOutcome:
        """One fenced write (`mode`: start, append or finish) of already encoded events.

        `token` makes it safe to send again after a failure whose outcome is unknown: the
        same token answers what the first send did, if it was applied (see
        lua/strategy_write.lua). Use a new one per write: `new_write_token()`.
        """
        k = self.keys.scan(scan_id)
        # The terminal event's id and ts: a start never ends the scan, so it needs neither.
        if mode == "start":
            event_id, ts = "", ""
        else:
            event_id, ts = ev.new_event_id(), ev.now_rfc3339()
        args: list[Any] = [
            mode,
            strategy,
            attempt,
            self.retention_s,
            event_id,
            ts,
            token,
            ev.SCHEMA_VERSION,
            self.max_entries,
        ]
        for type_, data in pairs:
            args += [type_, data, fence_note(type_, data)]
        # A finish may end the scan, and the worker stops the runs of a scan that ended:
        # a finishing write cancelled while its reply was on the way would skip the
        # running-set upkeep below. Its reply comes within the batcher's bounded wait.
        keys = [k.events, k.fence, k.writes]
        durable = self.durable_replicas > 0 and (
            mode == "finish" or any(t == "opportunity.found" for t, _ in pairs)
        )
        with anyio.CancelScope(shield=mode == "finish"):
            async with store_errors():
                if durable:
                    call = script_call(self._strategy_write, keys, args)
                    reply = await replicated(self.redis, call, k.events, self.durable_replicas)
                else:
                    reply = await self._writes.script(self._strategy_write, keys, args)
                status, second, terminal = reply
            if terminal and mode != "start":  # a start's third item is scan.requested
                await self._forget_running(scan_id)
        status = status.decode()
        if mode == "start":
            return WriteOutcome(status, attempt=int(second), requested=terminal or None)
        entry_id = second.decode() if isinstance(second, bytes) else None
        return WriteOutcome(
            status,
            attempt=attempt if status == "ok" else int(second or 0),
            entry_id=entry_id,
            terminal=terminal.decode() if terminal else None,
        )

    async def end_scan(
        self,
        scan_id: str,
        terminal_type: str,
        *,
        reason: str | None = None,
        before: Sequence[ev.Event] = (),
    ) -> tuple[str, str]:
        """End the scan from outside (cancel, deadline). Returns (status, entry id or type)."""
        reply = await self._end_call(scan_id, terminal_type, reason, before)
        return text(reply[0]), text(reply[1])

    async def end_overdue_scan(self, scan_id: str) -> tuple[str, str]:
        """End a scan past its deadline with what it has: `scan.completed` if any strategy
        completed, else `scan.failed`, with `reason: "deadline"`; strategies still pending
        or running show as cancelled. Returns (status, terminal type): ("ok", the type
        written), ("ended", the type it already had) or ("missing", "")."""
        reply = await self._end_call(scan_id, "auto", "deadline", ())
        status = text(reply[0])
        return status, text(reply[2] if status == "ok" else reply[1])

    async def _end_call(
        self, scan_id: str, terminal_type: str, reason: str | None, before: Sequence[ev.Event]
    ) -> Any:
        k = self.keys.scan(scan_id)
        args: list[Any] = [
            terminal_type,
            ev.new_event_id(),
            ev.now_rfc3339(),
            self.retention_s,
            reason or "",
            ev.SCHEMA_VERSION,
        ]
        for e in before:
            args += [ev.type_of(e), ev.encode(e)]
        keys = [k.events, k.fence, k.writes]
        async with store_errors():
            if self.durable_replicas > 0:
                call = script_call(self._end, keys, args)
                reply = await replicated(self.redis, call, k.events, self.durable_replicas)
            else:
                reply = await self._end(keys=keys, args=args)
        await self._forget_running(scan_id)
        return reply

    # -- the running set (storage/running.py) -----------------------------------------

    async def _forget_running(self, scan_id: str) -> None:
        """Best effort: the reaper removes an ended scan it still finds there anyway.

        Shielded: the caller is often a strategy run that the scan's end itself cancels
        (the worker stops runs of ended scans), and a ZREM cancelled before it was sent
        left the scan in the running set until its deadline.
        """
        with anyio.CancelScope(shield=True):
            try:
                async with store_errors():
                    with anyio.fail_after(FORGET_TIMEOUT_S):
                        running = self.keys.partition_of(scan_id).running
                        await self._writes.command("ZREM", running, scan_id)
            except (StoreUnavailable, TimeoutError):
                pass

    async def ended_scans(self, scan_ids: Sequence[str]) -> set[str]:
        """Which of `scan_ids` have ended (or expired): one pipelined round trip.

        Read from each scan's fence, written in the same script call as the terminal event,
        so a hand-written entry that merely looks terminal stops nothing.
        """
        if not scan_ids:
            return set()
        async with store_errors():
            pipe = self.redis.pipeline(transaction=False)
            for scan_id in scan_ids:
                pipe.hmget(self.keys.scan(scan_id).fence, "terminal", "total")
            replies = await pipe.execute()
        return {
            scan_id
            for scan_id, (terminal, total) in zip(scan_ids, replies, strict=True)
            if terminal is not None or total is None
        }

    async def strategy_state(self, scan_id: str, strategy: str) -> tuple[str, str | None]:
        """One strategy as the fence sees it: ("missing", None) no such scan (expired),
        ("foreign", None) not a strategy of this scan, ("ended", terminal type),
        ("done", "completed" | "failed"), or ("open", None)."""
        k = self.keys.scan(scan_id)
        async with store_errors():
            total, terminal, done, names, member = await self.redis.hmget(
                k.fence, "total", "terminal", f"done:{strategy}", "names", f"in:{strategy}"
            )
        if total is None:
            return "missing", None
        if terminal is not None:
            return "ended", text(terminal)
        if names is not None and member is None:
            return "foreign", None
        if done is not None:
            return "done", text(done)
        return "open", None

    # -- reads ------------------------------------------------------------------------

    async def read(
        self,
        scan_id: str,
        after: str | None = None,
        count: int | None = None,
        *,
        inclusive: bool = False,
    ) -> list[LogEntry]:
        """Entries after `after` (from it, when `inclusive`), or from the start."""
        start = (after if inclusive else f"({after}") if after else "-"
        async with store_errors():
            raw = await self.redis.xrange(self.keys.events(scan_id), start, "+", count=count)
        return entries(raw)

    async def read_if_exists(self, scan_id: str, after: str | None) -> list[LogEntry] | None:
        """Entries after `after`, or None when the stream does not exist (never was, or expired).

        One command, one round trip: the status path's whole cost in the steady state. The
        range starts AT `after` (inclusive), so a stream that still exists always answers
        with at least that entry, and an empty answer means the stream is gone. Only if
        `after` itself was deleted by hand (streams of scans are never trimmed) does it
        take a second command to tell the two apart.
        """
        key = self.keys.events(scan_id)
        async with store_errors():
            raw = await self._reads.command("XRANGE", key, after or "-", "+")
            if not raw:
                if after is None or not await self.redis.exists(key):
                    return None
                return []
        if after is not None and text(raw[0][0]) == after:
            raw = raw[1:]
        return entries(raw)

    async def last_entry(self, scan_id: str) -> LogEntry | None:
        async with store_errors():
            raw = await self.redis.xrevrange(self.keys.events(scan_id), "+", "-", count=1)
        return entries(raw)[0] if raw else None
