"""Building redis-py clients with timeouts chosen on purpose.

- Commands on the hot path run with no per-read timeout: redis-py wraps each read in an
  asyncio timeout when `socket_timeout` is set, which cost ~40% of pipelined throughput.
  A dead server is still noticed quickly: the connect timeout is short, TCP keepalive is
  on, and a refused or reset connection fails at once.
- Blocking reads (XREAD / XREADGROUP with BLOCK) get their own client, so a long BLOCK
  never trips a socket timeout meant for short commands (redis-py#3138).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

CONNECT_TIMEOUT_S = 2.0


def client(url: str, *, max_connections: int = 64) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=None,
        socket_keepalive=True,
        health_check_interval=30,
        max_connections=max_connections,
        retry_on_timeout=False,
    )


def text(value: Any) -> str:
    """A reply item as str (the clients here return bytes: decode_responses=False)."""
    return value.decode() if isinstance(value, bytes) else str(value)
