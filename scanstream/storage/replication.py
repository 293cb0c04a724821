"""Writes that count only once replicas hold them (`SCANSTREAM_DURABLE_REPLICAS`).

Redis replicates asynchronously: a master that dies a moment after answering a write may
take that write with it, and the replica promoted in its place never saw it. With
durability on, the writes a user must never see undone (a finding, a strategy's end, the
scan's terminal event) are each followed by `WAIT <replicas> <timeout>` on the same
connection, so the reply says how many replicas hold everything written so far there.
Fewer than asked is `NotReplicated`, a `StoreUnavailable`: the writer sends the same
fenced write again with its write token (its reply is the first one's, nothing is
appended twice) and waits again, so a write is reported stored only once it would
survive its master's death. Writes that may be lost and redone (a strategy's start, its
progress) are not held up.

On a cluster, WAIT must reach the node that took the write: it is pinned to the node
owning the write's key, in the same pipeline (redis-py sends one node's part of a
pipeline on one connection, in order).
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from scanstream.errors import StoreUnavailable
from scanstream.storage.scripts import Call

WAIT_TIMEOUT_MS = 1000  # past it, the write is sent again (and waited for) by its writer


class NotReplicated(StoreUnavailable):
    """The write is on the master but not yet on enough replicas."""


def is_cluster(redis: object) -> bool:
    return isinstance(redis, RedisCluster)


async def replicated(redis: Redis, call: Call, key: str, replicas: int) -> Any:
    """Run one script call (on `key`'s slot), then WAIT until `replicas` hold it."""
    script, args = call
    assert script is not None, "only script calls are replicated"
    for _ in range(2):  # the second time after NOSCRIPT (a new master has no scripts yet)
        pipe = redis.pipeline(transaction=False)
        pipe.evalsha(script.sha, *args)
        if is_cluster(redis):
            node = cast(RedisCluster, redis).get_node_from_key(key)
            pipe.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS, target_nodes=node)
        else:
            pipe.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS)
        reply, acked = await pipe.execute(raise_on_error=False)
        if not isinstance(reply, NoScriptError):
            break
        script.sha = await redis.script_load(script.script)
    if isinstance(reply, Exception):
        raise reply
    if isinstance(acked, Exception) or int(acked) < replicas:
        raise NotReplicated(f"the write is on the master, not yet on {replicas} replica(s)")
    return reply
