"""Redis failures as scanstream errors, at the one boundary.

Every storage call runs inside `store_errors()`: a connection-level failure (refused,
reset, timed out, Redis still loading its data) becomes `StoreUnavailable`, which the
API answers with `503` and the worker waits out. A reply error (a script's own error,
WRONGTYPE, NOGROUP) is not a store outage and is left to the module that sent the
command, which knows what it means.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

from scanstream.errors import StoreUnavailable

REDIS_FAULTS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
# redis-py's own connection-level errors: what a call that escaped `store_errors` raises
# (the API still answers them with 503, as a last resort).
CLIENT_FAULTS: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
)


@asynccontextmanager
async def store_errors() -> AsyncIterator[None]:
    """Turn connection-level Redis failures into StoreUnavailable."""
    try:
        yield
    except REDIS_FAULTS as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except redis_errors.BusyLoadingError as exc:
        raise StoreUnavailable("Redis is loading its data set") from exc
