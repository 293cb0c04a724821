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
  mistaken for Redis being down.
- Blocking reads (XREAD / XREADGROUP with BLOCK) get their own client, so a long BLOCK
  never trips a socket timeout meant for short commands (redis-py#3138).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECT_TIMEOUT_S = 2.0


def retry_once() -> Retry:
    """Re-send a command once on a fresh connection after a connection-level failure."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def client(url: str, *, max_connections: int = 64) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,  # wait for a free connection; the caller's deadline bounds the wait
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
