"""Building redis-py clients with timeouts and retries chosen on purpose.

- Commands on the hot path run with no per-read timeout: redis-py wraps each read in an
  asyncio timeout when `socket_timeout` is set, which cost ~40% of pipelined throughput.
  Callers bound their own waits instead: one deadline per HTTP request (the API), or a
  loop that backs off and tries again (the worker). A dead server is still noticed
  quickly: the connect timeout is short, TCP keepalive is on, and a refused or reset
  connection fails at once.
- A pooled connection broken by a Redis restart fails its next command ("Connection
  closed by server"). That command is re-sent once, on a fresh connection, without the
  caller seeing it; a second failure is the caller's (Redis really is down). redis-py's
  own default (10 retries with up to 1 s of backoff each) would hide an outage for
  seconds and re-send non-idempotent writes up to ten times: scanstream's writes are
  fenced and carry a write token, so one re-send is safe, and one is all it takes.
  Timeouts are not retried: a server that does not answer is not helped by asking again.
- The pool waits for a free connection instead of failing ("Too many connections"): a
  burst of requests queues for the pool, bounded by the caller's deadline, and is never
  mistaken for Redis being down. Unlike redis-py's `BlockingConnectionPool` (a condition
  variable and a timeout scope on every checkout: 7-9% of a no-op job's worker CPU here),
  it costs nothing while a connection is free: only a full pool makes a caller wait.
- Blocking reads (XREAD / XREADGROUP with BLOCK) get their own client, so a long BLOCK
  never trips a socket timeout meant for short commands (redis-py#3138).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

CONNECT_TIMEOUT_S = 2.0


def retry_once() -> Retry:
    """Re-send a command once on a fresh connection after a connection-level failure."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class WaitingConnectionPool(ConnectionPool):
    """A connection pool that, when full, waits for a connection to be released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            if self.can_get_connection():
                try:
                    return await super().get_connection()
                except MaxConnectionsError:  # taken while we queued for the pool's lock
                    pass
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the caller's deadline bounds this wait
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: hand the wake on
                waiter.cancel()
                raise

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def client(url: str, *, max_connections: int = 64) -> Redis:
    pool = WaitingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        decode_responses=False,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=None,
        socket_keepalive=True,
        health_check_interval=30,
        retry=retry_once(),
        retry_on_error=[RedisConnectionError],
    )
    return Redis.from_pool(pool)  # the client owns its pool and closes it


def text(value: Any) -> str:
    """A reply item as str (the clients here return bytes: decode_responses=False)."""
    return value.decode() if isinstance(value, bytes) else str(value)
