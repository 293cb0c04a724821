"""One deadline on the Redis work of one request.

The clients run with no per-read socket timeout (see `storage/connection.py`): redis-py would wrap
every reply read in a timer of its own, which cost ~40% of pipelined throughput. A Redis
that stops answering (frozen by a long fork, SIGSTOP, a network partition) would then hold
a request for ever. So each request bounds its Redis work as a whole instead: one scope
around the handler's store calls, entered once however many round trips they take.

Even one asyncio timer per request (`asyncio.timeout`) costs ~5 us: a timer handle made,
scheduled and cancelled each time. The scopes share timers instead: a scope joins the
bucket of the 0.1 s tick its deadline falls in, and one loop timer per bucket cancels
whatever scopes are still open in it when it fires. Entering and leaving a scope is a set
insert and removal; a deadline fires up to one tick late.

When it fires, the task is cancelled where it waits (on a reply, on the connection pool,
on a connect). redis-py closes a connection whose command was cancelled before or during
its reply (`Connection.read_response`, `send_packed_command`: "close in case of
BaseException"), so the late reply is never read by the next command on that connection
(tests/test_request_deadline.py checks this against a frozen Redis).

The request then fails with `StoreUnavailable`, answered `503 store_unavailable` with
`Retry-After`. Redis was too slow or unreachable for that long: a real store failure. A
full connection pool is not one by itself: the pool waits (it never raises "Too many
connections"), and only a wait that outlasts the whole deadline fails the request.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

from scanstream.errors import StoreUnavailable

TICK_S = 0.1  # how coarse deadlines are: one shared timer per tick that has scopes due


class Deadline:
    """`with deadline():` bounds the block's Redis work by `seconds` (0: unbounded).

    A plain (not async) context manager: entering and leaving a scope awaits nothing, and
    each `async with` would cost two coroutine objects more. One instance serves any
    number of concurrent scopes on one event loop."""

    __slots__ = ("_buckets", "_loop", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: dict[int, set[_Scope]] = {}  # tick -> the scopes due by then

    def __call__(self) -> _Scope | _Unbounded:
        return _Scope(self) if self.seconds > 0 else _UNBOUNDED

    def _join(self, scope: _Scope, loop: asyncio.AbstractEventLoop) -> int:
        if loop is not self._loop:  # another loop (tests): the old one's timers are gone
            self._loop, self._buckets = loop, {}
        tick = math.ceil((loop.time() + self.seconds) / TICK_S)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            loop.call_at(tick * TICK_S, self._expire, tick)
        bucket.add(scope)
        return tick

    def _leave(self, scope: _Scope, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.discard(scope)

    def _expire(self, tick: int) -> None:
        for scope in self._buckets.pop(tick, ()):
            scope.expire()


class _Scope:
    """One bounded block. Its expiry cancels the task where it waits; leaving the block
    turns that cancellation (and only that one) into StoreUnavailable, the way
    `asyncio.timeout` turns its own into TimeoutError."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_task", "_tick")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline bounds the work of a task: enter it in one")
        self._task = task
        self._cancelling = task.cancelling()
        self._tick = self._deadline._join(self, task.get_loop())

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._deadline._leave(self, self._tick)
        if not self._expired:
            return
        # Ours was the cancellation if none other is pending once ours is withdrawn.
        if (
            self._task.uncancel() <= self._cancelling
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        ):
            seconds = self._deadline.seconds
            raise StoreUnavailable(f"Redis did not answer within {seconds:g} s") from None


class _Unbounded:
    """The deadline switched off (`SCANSTREAM_REQUEST_TIMEOUT=0`): no timer at all."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_UNBOUNDED = _Unbounded()
