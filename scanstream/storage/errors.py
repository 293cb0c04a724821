"""Redis failures as scanstream errors, at the one boundary.

Every storage call runs inside `store_errors()`: a connection-level failure (refused,
reset, timed out, Redis still loading its data) becomes `StoreUnavailable`, which the
API answers with `503` and the worker waits out. A reply error (a script's own error,
WRONGTYPE, NOGROUP) is not a store outage and is left to the module that sent the
command, which knows what it means.

On a Redis Cluster, a slot on the move (MOVED, ASK), a migration under way (TRYAGAIN),
a failover (CLUSTERDOWN, a slot no node serves, no node answering) are outages too:
redis-py's cluster client has retried them for a while already (storage/connection.py),
and what is left is the caller's to wait out, as a restart of a single Redis is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

from scanstream.errors import StoreUnavailable

REDIS_FAULTS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
CLUSTER_FAULTS = (
    redis_errors.AskError,  # MovedError is one
    redis_errors.TryAgainError,
    # ClusterDownError, and "TTL exhausted": redirects that went on past the client's
    # limit (redis-py 8.2 can bounce a command between the two owners of a slot being
    # migrated: it sends ASKING on another pooled connection than the command)
    redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
    redis_errors.RedisClusterUnreachableError,
)
# redis-py's own connection-level errors: what a call that escaped `store_errors` raises
# (the API still answers them with 503, as a last resort).
CLIENT_FAULTS: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    *CLUSTER_FAULTS,
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
    except CLUSTER_FAULTS as exc:
        raise StoreUnavailable(f"the Redis Cluster cannot serve the slot now: {exc}") from exc
