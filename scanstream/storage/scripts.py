"""The Lua scripts of scanstream/storage/lua/, by file name.

Each script's header says its KEYS, ARGV and reply. Scripts fence and decide (attempt
numbers, the one terminal event, claims); they never build or parse an event body
beyond what Python hands them.
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def lua_source(name: str) -> str:
    """A script's source, by file name."""
    return resources.files("scanstream.storage").joinpath("lua", name).read_text()


def register(redis: Redis, name: str) -> AsyncScript:
    """A script registered on `redis`: sent by hash (EVALSHA), reloaded when Redis lost it."""
    return redis.register_script(lua_source(name))
