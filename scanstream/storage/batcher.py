"""Coalescing concurrent Redis calls into one pipelined round trip per event-loop turn.

Why: a worker runs many strategies at once, and each one makes its own fenced script
calls (start, progress, finish). Sent one by one, a script call costs ~110 us of client
CPU (connection checkout, a send, a read, redis-py's bookkeeping); inside a pipeline of
14 it costs ~42 us. `PipelineBatcher.script` / `.command` queue a call and wait for its
own reply: the first caller of a batch (its leader) lets the event loop run one turn, so
that every task ready to write queues its call too, then sends them all in one
non-transactional pipeline and hands each caller its own reply.

What does not change: each call is still its own command (a fenced script call stays one
atomic script on the scan's own hash slot; a pipeline is not a transaction and needs no
common slot), and each caller gets its own reply or its own error. A connection-level
failure of the pipeline is raised to every caller of that batch (the store maps it to
`StoreUnavailable`), since none of them can know whether its call ran.

Reads (`detached=True`, the API's status reads): the same coalescing, but the batch is
sent by a task of its own and every caller, the first included, only waits for its reply.
A read has no effect to finish, and a request must answer by its own deadline (`503
store_unavailable` within `SCANSTREAM_REQUEST_TIMEOUT`), so no caller may be held by the
others' batch: cancelling a waiting reader stops its wait at once, and the batch still
goes out for the rest; once every caller has given up, the send is cancelled. Fifty
concurrent status reads cost one pipeline instead of fifty client round trips (~45 us of
redis-py CPU each, ~10 us inside a pipeline).

Cancellation: the leader sends and reads the batch in a shielded scope, so cancelling the
leader (its scan was cancelled, its strategy timed out) never aborts the other callers'
calls half sent. The shield is bounded: a batch with no reply after `REPLY_TIMEOUT_S`
is abandoned (its connection dropped) and every caller gets a `TimeoutError`, so a
hung Redis cannot hold a shutdown for ever. A caller cancelled while waiting stops
waiting, but its call has been queued and may still run, exactly as a call cancelled
after it was sent may have run: every write made through here is fenced, so a late one
is refused or harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import TimeoutError as RedisTimeout

from scanstream.storage.scripts import Call, pipelined

MAX_BATCH = 128  # a fuller batch is sent at once; the next call opens a new one
REPLY_TIMEOUT_S = 10.0


class _Batch:
    __slots__ = ("calls", "done", "replies", "sender", "waiting")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.replies: list[Any] = []
        self.done = anyio.Event()
        self.sender: asyncio.Task[None] | None = None  # detached batches: the task sending it
        self.waiting = 0  # detached batches: callers still waiting for their replies


class PipelineBatcher:
    """Sends the calls queued during one event-loop turn in one pipeline.

    reply = await batcher.script(script, keys, args)   # EVALSHA, reloaded if needed
    reply = await batcher.command("ZREM", key, member)
    """

    def __init__(self, redis: Redis, max_batch: int = MAX_BATCH, *, detached: bool = False) -> None:
        self.redis = redis
        self.max_batch = max(1, max_batch)
        self.detached = detached  # reads: a task of its own sends each batch (see above)
        self._open: _Batch | None = None
        self._senders: set[asyncio.Task[None]] = set()  # detached sends under way
        self.round_trips = 0  # pipelines sent (for tests and curiosity)

    @property
    def sends_under_way(self) -> int:
        """Detached batches being sent now (tests, and curiosity)."""
        return len(self._senders)

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await self._call(script, (len(keys), *keys, *args))

    async def command(self, *args: Any) -> Any:
        return await self._call(None, args)

    async def _call(self, script: AsyncScript | None, args: tuple[Any, ...]) -> Any:
        batch = self._open
        leader = batch is None
        if batch is None:
            batch = self._open = _Batch()
        index = len(batch.calls)
        batch.calls.append((script, args))
        if len(batch.calls) >= self.max_batch and self._open is batch:
            self._open = None
        if self.detached:
            await self._wait_detached(batch, leader)
        elif leader:
            with anyio.CancelScope(shield=True):
                await self._send_next_turn(batch)
        else:
            await batch.done.wait()
        reply = batch.replies[index]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _wait_detached(self, batch: _Batch, leader: bool) -> None:
        """Wait for a detached batch's replies; the last caller to give up (its deadline)
        cancels the send, so a frozen Redis does not hold a connection for batches
        nobody waits for any more (redis-py drops a connection cut off mid-reply)."""
        if leader:
            batch.sender = asyncio.ensure_future(self._send_next_turn(batch))
            self._senders.add(batch.sender)
            batch.sender.add_done_callback(self._senders.discard)
        batch.waiting += 1
        try:
            await batch.done.wait()
        finally:
            batch.waiting -= 1
            if batch.waiting == 0 and not batch.done.is_set() and batch.sender is not None:
                if self._open is batch:  # nobody may join a batch that is being dropped
                    self._open = None
                batch.sender.cancel()

    async def _send_next_turn(self, batch: _Batch) -> None:
        await anyio.lowlevel.checkpoint()  # one loop turn: ready tasks queue theirs
        if self._open is batch:
            self._open = None
        await self._send(batch)

    async def _send(self, batch: _Batch) -> None:
        try:
            with anyio.fail_after(REPLY_TIMEOUT_S):
                batch.replies = await self._execute(batch.calls)
        except TimeoutError:
            late = RedisTimeout(f"no reply from Redis in {REPLY_TIMEOUT_S:g}s")
            batch.replies = [late] * len(batch.calls)
        except Exception as exc:  # the connection failed: nobody knows whether its call ran
            batch.replies = [exc] * len(batch.calls)
        finally:
            if len(batch.replies) != len(batch.calls):  # never leave a waiter hanging
                batch.replies = [RuntimeError("batch not sent")] * len(batch.calls)
            batch.done.set()

    async def _execute(self, calls: list[Call]) -> list[Any]:
        return await pipelined(self.redis, calls, strict=False, on_send=self._count_round_trip)

    def _count_round_trip(self) -> None:
        self.round_trips += 1
