"""One tail reader per API process, handing stream entries to every SSE subscriber and
every waiting long-poll (`results?wait=`).

A thousand browsers watching scans must not mean a thousand blocking Redis connections.
Each process runs one task that reads every watched stream with a single multiplexed
`XREAD BLOCK` (one key per watched scan) on a connection of its own, formats each entry
once, and offers it to every follower of that scan: an SSE subscriber queues it, a waiter
(`live/waiter.py`) wakes on the terminal event. Redis connections per process stay O(1)
in the number of followers.

Exactly once across the replay -> live handoff. A subscriber is registered for its
stream (synchronously) before it reads anything. The stream's tail position `P` is then
known: either the tail reader already follows the stream, or one lookup of its last
entry (`TailReader.last_id`) fixes it. From then on every entry after `P` reaches the
subscriber's queue (the reader hands out entries and advances `P` in one step, with no
await between), and the replay, which reads the stream after `P` was fixed, covers every
entry up to `P`. The subscriber sends an entry only if its id is above the last id it
sent, so the overlap is skipped.

The set of watched streams changes while a read is blocked: the read is bounded
(`TAIL_BLOCK_MS`), so a newly watched stream joins the next read at most that late. Its
entries are never lost meanwhile, only delayed: the read resumes from its concrete
position, never from `$`. Streams that already are watched are not delayed at all.

Every Redis read is the storage layer's (`storage/tail.py`, `storage/events.py`): this
module only decides what to follow from where, and hands out what comes back.

A slow subscriber never delays the others: `put_nowait` into a full queue drops that
subscriber (its connection is closed; the client resumes with `Last-Event-ID`).

Redis may freeze (a long fork, SIGSTOP, a partition). The short reads (a new stream's
position, a replay page) are bounded by the request deadline (`scanstream/deadline.py`),
and so is each tail read (its BLOCK time plus the deadline): a read cut off drops its
connection, and the reader backs off and reconnects until Redis answers again.

On shutdown (`shutdown()`, called on SIGINT / SIGTERM) every stream ends at once and
every waiter answers what it has, so a graceful shutdown never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from scanstream import events as ev
from scanstream.deadline import Deadline
from scanstream.errors import ScanstreamError
from scanstream.ids import stream_id_key
from scanstream.live import sse
from scanstream.live.admission import Admission
from scanstream.live.subscriber import HEARTBEAT, Item, Subscriber
from scanstream.live.waiter import Waiter
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.storage.tail import TailReader, TailUnreadable

Follower = Subscriber | Waiter

log = logging.getLogger("scanstream.live")

TAIL_BLOCK_MS = 200  # bound on one XREAD BLOCK: how late a newly watched stream may join
TAIL_COUNT = 500  # entries per stream per read
REPLAY_PAGE = 500  # entries per replay read
# Followers' reads in flight at once (SSE set-up and replay pages, long-polls' reads): a
# reconnect storm or a burst of long-polls queues here instead of taking the Redis pool.
READ_SLOTS = 16
DROP_GRACE_S = 2.0  # a dropped subscriber's last bytes get this long before its socket is cut
BACKOFF_S = (0.05, 2.0)  # the tail reader's retry delays while Redis is unreachable
RETRY_AFTER_S = 2  # what a refused (429) connection is told
SHUTTING_DOWN = "the server is shutting down"


class Fanout:
    def __init__(self, settings: Settings) -> None:
        self.streams: Admission[Subscriber] = Admission(
            "event streams", settings.sse_max, settings.sse_max_per_user
        )
        self.waits: Admission[Waiter] = Admission(
            "waiting results requests", settings.wait_max, settings.wait_max_per_user
        )
        self.buffer = max(1, settings.sse_buffer)
        self.heartbeat_s = max(0.01, settings.sse_heartbeat_s)
        # Short reads (a position, a replay page) get the request deadline; a tail read
        # gets its BLOCK time on top of it.
        self.deadline = Deadline(settings.request_timeout_s)
        tail_s = settings.request_timeout_s
        self._tail_deadline = Deadline(tail_s + TAIL_BLOCK_MS / 1000 if tail_s > 0 else 0)
        self.closing = False  # shutdown() was called: end every follower at once
        self.tail: TailReader | None = None  # its own connection: the multiplexed reads only
        self.store: EventStore | None = None  # the hot client: replay pages
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watchers: dict[str, set[Follower]] = {}  # scan id -> its followers
        self._positions: dict[str, str] = {}  # scan id -> last id handed out
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.page_size = REPLAY_PAGE
        self.read_slots = asyncio.Semaphore(READ_SLOTS)
        # counters for /metrics
        self.dropped_slow = 0
        self.dropped_other = 0
        self.reads = 0
        self.read_errors = 0
        self.delivered = 0

    # -- lifecycle (the app's lifespan) -----------------------------------------------

    async def start(self, tail: TailReader, store: EventStore) -> None:
        """Start the tail reader on `tail` (a connection of its own, closed by `stop`);
        `store` reads the replay pages, on the app's hot client."""
        self.tail, self.store = tail, store
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._wake = asyncio.Event()
        self.read_slots = asyncio.Semaphore(READ_SLOTS)
        self._tasks = [
            asyncio.create_task(self._tail_loop(), name="sse-tail"),
            asyncio.create_task(self._heartbeat_loop(), name="sse-heartbeat"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._lookups.values()]
        for task in tasks:
            task.cancel()
        # their outcomes (cancelled) are collected; a cancellation of stop() itself is not
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self.tail is not None:
            await self.tail.aclose()  # the fan-out owns its tail reader
            self.tail = None

    # -- admission and following ------------------------------------------------------

    def admit(self, user: str, scan_id: str) -> Subscriber:
        """Count a new SSE connection, or raise `admission.Full` when a cap is reached."""
        sub = Subscriber(user, scan_id)
        self.streams.admit(sub)
        if self.closing:  # it sends its first replay page and ends
            self.drop(sub, SHUTTING_DOWN)
        return sub

    def admit_waiter(self, user: str, scan_id: str) -> Waiter:
        """Count a new long-poll, or raise `admission.Full` when a cap is reached."""
        waiter = Waiter(user, scan_id)
        self.waits.admit(waiter)
        if self.closing:  # it answers at once
            waiter.end(SHUTTING_DOWN)
        return waiter

    async def follow(self, sub: Follower, known: str | None = None) -> str:
        """Register `sub` for its scan's new entries; returns the stream's tail position
        once it is fixed: every entry after it reaches `sub`, so a replay read from now on
        overlaps the live entries (never leaves a gap).

        `known`: an entry id the caller has just read the stream up to (its last entry at
        that moment). A stream nobody follows yet starts from it, with no lookup.
        """
        scan_id = sub.following = sub.scan_id
        self._watchers.setdefault(scan_id, set()).add(sub)
        position = self._positions.get(scan_id)
        if position is not None:
            return position
        lookup = self._lookups.get(scan_id)
        if lookup is None:
            if known is not None:
                self._positions[scan_id] = known
                self._wake.set()
                return known
            lookup = self._lookups[scan_id] = asyncio.create_task(self._lookup(scan_id))
        await asyncio.shield(lookup)
        return self._positions.get(scan_id) or "0-0"

    async def read_page(
        self, scan_id: str, after: str | None, *, inclusive: bool = False
    ) -> list[ev.LogEntry]:
        """Up to `page_size` entries after `after` (from it, when `inclusive`; from the
        start when None or 0-0): the replay's reads, on the hot client. Callers bound it
        with `deadline`, their wait for one of the `read_slots` included."""
        assert self.store is not None, "the fan-out is not started"
        if after is None or after == "0-0":
            after, inclusive = None, False
        count = self.page_size + 1 if inclusive else self.page_size
        return await self.store.read(scan_id, after, count, inclusive=inclusive)

    async def _lookup(self, scan_id: str) -> None:
        """Fix a newly followed stream's position: its last entry (a task of its own, shared
        by every follower that arrives meanwhile, and bounded: Redis may be frozen)."""
        assert self.tail is not None, "the fan-out is not started"
        try:
            with self.deadline():
                last = await self.tail.last_id(scan_id)
        finally:
            if self._lookups.get(scan_id) is asyncio.current_task():
                del self._lookups[scan_id]
        if scan_id in self._watchers and scan_id not in self._positions:
            self._positions[scan_id] = last or "0-0"
            self._wake.set()

    def close(self, sub: Follower) -> None:
        """Forget `sub` entirely (idempotent): the response calls it in its `finally`."""
        self._unwatch(sub)
        if isinstance(sub, Waiter):
            self.waits.release(sub)
            return
        self.streams.release(sub)
        if sub._timer is not None:
            sub._timer.cancel()
            sub._timer = None

    def _unwatch(self, sub: Follower) -> None:
        scan_id = sub.following
        if scan_id is None:
            return
        watchers = self._watchers.get(scan_id)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._watchers[scan_id]
                self._positions.pop(scan_id, None)

    def drop(self, sub: Follower, reason: str, *, slow: bool = False) -> None:
        """End `sub` early. A waiter answers what it has; a subscriber stops receiving now,
        ends its response, and if it cannot even send that end within `DROP_GRACE_S` its
        connection is cut."""
        self._unwatch(sub)
        if isinstance(sub, Waiter):
            sub.end(reason)
            return
        if sub.dropped is not None or sub not in self.streams:
            return
        if slow:
            self.dropped_slow += 1
        else:
            self.dropped_other += 1
        sub.end(reason)
        if self.loop is not None:
            sub._timer = self.loop.call_later(DROP_GRACE_S, self._cut, sub)

    @staticmethod
    def _cut(sub: Subscriber) -> None:
        sub._timer = None
        if sub.abort is not None:
            sub.abort()

    def drop_all(self, reason: str = "the server closed the stream") -> int:
        """Drop every SSE connection (an operator's or a test's hook); call it on the loop."""
        subs = list(self.streams)
        for sub in subs:
            self.drop(sub, reason)
        return len(subs)

    def shutdown(self) -> None:
        """The server is stopping: end every SSE stream (clients resume elsewhere with
        `Last-Event-ID`) and every long-poll (it answers what it has) now, and any that
        arrives from now on at once. Call it on the loop; idempotent."""
        self.closing = True
        self.drop_all(SHUTTING_DOWN)
        for waiter in self.waits:
            self.drop(waiter, SHUTTING_DOWN)

    # -- the tail reader --------------------------------------------------------------

    async def _tail_loop(self) -> None:
        assert self.tail is not None
        delay = BACKOFF_S[0]
        while True:
            positions = dict(self._positions)
            if not positions:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                # Bounded: a read cut off drops its connection (Redis froze, or the network
                # lost it); the next one reconnects.
                with self._tail_deadline():
                    replies = await self.tail.read(
                        positions, count=TAIL_COUNT, block_ms=TAIL_BLOCK_MS
                    )
            except Exception as exc:  # the reader must never die: log, back off, retry
                self.read_errors += 1
                if isinstance(exc, TailUnreadable):
                    log.exception("SSE tail read failed (retrying in %.2fs)", delay)
                    await self._evict_broken(list(positions))
                elif isinstance(exc, ScanstreamError):
                    log.warning("SSE tail read failed (retrying in %.2fs): %s", delay, exc)
                else:
                    log.exception("SSE tail read failed (retrying in %.2fs)", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            delay = BACKOFF_S[0]
            self.reads += 1
            for scan_id, entries in replies:
                self._dispatch(scan_id, entries)

    async def _evict_broken(self, scan_ids: list[str]) -> None:
        """A key that is no longer a stream (WRONGTYPE) fails the whole multiplexed read:
        drop the subscribers of such scans, so the others keep their live feed."""
        assert self.tail is not None
        try:
            with self.deadline():
                broken = await self.tail.not_streams(scan_ids)
        except ScanstreamError:
            return
        for scan_id, key, kind in broken:
            log.error("SSE: %s is a %s, not a stream: dropping its subscribers", key, kind)
            for sub in list(self._watchers.get(scan_id, ())):
                self.drop(sub, "the scan's log cannot be read")

    def _dispatch(self, scan_id: str, entries: Sequence[ev.LogEntry]) -> None:
        """Hand the entries after the stream's position to its subscribers; advance it.
        No await in here: position and hand-out move together (see the module doc)."""
        position = self._positions.get(scan_id)
        watchers = self._watchers.get(scan_id)
        if position is None or not watchers:
            return  # not watched (any more), or its position is still being fixed
        floor = stream_id_key(position)
        items: list[Item] = []
        for entry in entries:
            item_key = stream_id_key(entry.id)
            if item_key <= floor:
                continue  # a read that started before this stream was re-watched
            items.append(Item(item_key, sse.message(scan_id, entry), sse.ends_stream(entry)))
        if not items:
            return
        self._positions[scan_id] = sse.id_str(items[-1].key)
        for sub in list(watchers):
            if not sub.offer(items, self.buffer):
                self.drop(sub, "too slow: its buffer of events overflowed", slow=True)
        self.delivered += len(items) * len(watchers)

    async def _heartbeat_loop(self) -> None:
        """Queue a keep-alive comment for every idle follower, so each connection sends
        something at least every `heartbeat_s` (one timer per process, not per connection)."""
        tick = min(1.0, self.heartbeat_s / 4)
        while True:
            await asyncio.sleep(tick)
            due = time.monotonic() - (self.heartbeat_s - tick)
            for watchers in self._watchers.values():
                for sub in watchers:
                    if isinstance(sub, Subscriber) and sub.last_write <= due and sub.queue.empty():
                        sub.queue.put_nowait(HEARTBEAT)

    # -- figures ----------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self.streams)

    @property
    def waiters(self) -> int:
        return len(self.waits)

    @property
    def rejected(self) -> int:
        return self.streams.rejected

    @property
    def watched(self) -> int:
        return len(self._positions)

    def following(self) -> int:
        """SSE connections following a stream live (waiters are counted by `waiters`)."""
        return sum(isinstance(s, Subscriber) for w in self._watchers.values() for s in w)
