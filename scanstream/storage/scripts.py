"""The Lua scripts of scanstream/storage/lua/, by file name.

Each script's header says its KEYS, ARGV and reply. Scripts fence and decide (attempt
numbers, the one terminal event, claims); they never build or parse an event body
beyond what Python hands them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# One call of a pipeline: (the script, or None for a plain command; the command's
# arguments, for a script its numkeys, keys and args).
Call = tuple[AsyncScript | None, tuple[Any, ...]]


def lua_source(name: str) -> str:
    """A script's source, by file name."""
    return resources.files("scanstream.storage").joinpath("lua", name).read_text()


def register(redis: Redis, name: str) -> AsyncScript:
    """A script registered on `redis`: sent by hash (EVALSHA), reloaded when Redis lost it."""
    return redis.register_script(lua_source(name))


def script_call(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Call:
    return script, (len(keys), *keys, *args)


async def pipelined(
    redis: Redis,
    calls: Sequence[Call],
    *,
    strict: bool = True,
    on_send: Callable[[], None] | None = None,
) -> list[Any]:
    """Send `calls` in one non-transactional pipeline (on a cluster: one per node, each
    call on its own slot); replies in call order. `strict`: a call's error is raised (the
    first one), once every call has run; else it stands in its reply's place.

    NOSCRIPT (Redis restarted, a failover, a node that never saw the script): that call
    did not run; the script is loaded (on every master, on a cluster) and those calls are
    sent again. `on_send` is called for each pipeline sent.
    """
    replies = await _pipeline(redis, calls, on_send)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            if script is not None:
                script.sha = await redis.script_load(script.script)
        again = await _pipeline(redis, [calls[i] for i in missing], on_send)
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    if strict:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


async def _pipeline(
    redis: Redis, calls: Sequence[Call], on_send: Callable[[], None] | None
) -> list[Any]:
    if on_send is not None:
        on_send()
    pipe = redis.pipeline(transaction=False)
    for script, args in calls:
        if script is None:
            pipe.execute_command(*args)
        else:
            pipe.evalsha(script.sha, *args)
    return list(await pipe.execute(raise_on_error=False))
