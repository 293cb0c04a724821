"""The Redis client scanstream builds: one silent re-send after a broken connection, and a
pool that waits when full instead of failing."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis

from scanstream.settings import Settings
from scanstream.storage.connection import client

pytestmark = pytest.mark.anyio


async def test_a_connection_broken_under_the_client_is_replaced_unseen(
    settings: Settings, redis: Redis
) -> None:
    """Given a client whose pooled connection the server closed (as a restart does), the
    next command answers normally: it is sent again once, on a fresh connection."""
    r = client(settings.redis_url or "", max_connections=1)
    try:
        name = "victim-" + settings.prefix
        await r.client_setname(name)
        [victim] = [c for c in await redis.client_list() if c["name"] == name]
        assert await redis.client_kill_filter(_id=victim["id"]) == 1
        assert await r.ping() is True
    finally:
        await r.aclose()


async def test_a_full_pool_makes_callers_wait_instead_of_failing(settings: Settings) -> None:
    """Given a pool of 2 connections and 30 concurrent commands that each hold one for
    50 ms, every command answers (none fails with "Too many connections")."""
    r = client(settings.redis_url or "", max_connections=2)
    answers: list[object] = []

    async def hold() -> None:
        answers.append(await r.blpop(["never-pushed-" + settings.prefix], timeout=0.05))

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(30):
                    tg.start_soon(hold)
        assert answers == [None] * 30
        assert len(r.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]
    finally:
        await r.aclose()


async def test_a_caller_cancelled_while_waiting_for_the_pool_loses_no_wake_up(
    settings: Settings,
) -> None:
    """Given callers queued for a full pool, when some of them are cancelled while they
    wait, every other caller still gets a connection."""
    r = client(settings.redis_url or "", max_connections=1)
    done: list[int] = []

    async def hold(i: int) -> None:
        await r.blpop(["never-pushed-" + settings.prefix], timeout=0.05)
        done.append(i)

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(hold, i)
                async with anyio.create_task_group() as doomed:
                    for i in range(100, 104):
                        doomed.start_soon(hold, i)
                    await anyio.sleep(0.02)  # all queued behind the one connection
                    doomed.cancel_scope.cancel()
        assert sorted(i for i in done if i < 100) == list(range(6))
    finally:
        await r.aclose()
