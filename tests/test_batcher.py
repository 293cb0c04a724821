"""The write coalescer over a real Redis: one round trip per event-loop turn, each caller
its own reply or error, fenced writes unchanged."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.embedded import RedisProcess, free_port
from scanstream.errors import StoreUnavailable
from scanstream.storage.batcher import PipelineBatcher
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from scanstream.storage.running import RunningScans
from tests.support.scans import start_scan

pytestmark = pytest.mark.anyio


async def _gather(*calls: Any) -> list[Any]:
    """Run the calls concurrently; their replies (or exceptions) in order."""
    out: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            out[i] = await calls[i]()
        except Exception as exc:
            out[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return out


async def test_concurrent_calls_share_one_round_trip(redis: Redis, prefix: str) -> None:
    """Calls queued in the same loop turn go in one pipeline; each gets its own reply."""
    batcher = PipelineBatcher(redis)
    replies = await _gather(
        *((lambda i=i: batcher.command("INCRBY", f"{prefix}:n{i % 3}", i)) for i in range(20))
    )
    assert batcher.round_trips == 1
    totals: dict[int, int] = {}
    for i, reply in enumerate(replies):
        totals[i % 3] = totals.get(i % 3, 0) + i
        assert reply == totals[i % 3]  # in call order, each its own reply


async def test_a_full_batch_is_sent_and_the_next_call_opens_another(
    redis: Redis, prefix: str
) -> None:
    """With max_batch 4, ten concurrent calls take three round trips and all succeed."""
    batcher = PipelineBatcher(redis, max_batch=4)
    replies = await _gather(*((lambda: batcher.command("INCR", f"{prefix}:n")) for _ in range(10)))
    assert batcher.round_trips == 3
    assert sorted(replies) == list(range(1, 11))


async def test_a_commands_own_error_goes_to_its_caller_only(redis: Redis, prefix: str) -> None:
    """Given one failing command in a batch, its caller gets the error and the others their
    replies."""
    await redis.set(f"{prefix}:text", "not a number")
    batcher = PipelineBatcher(redis)
    replies = await _gather(
        lambda: batcher.command("INCR", f"{prefix}:a"),
        lambda: batcher.command("INCR", f"{prefix}:text"),
        lambda: batcher.command("INCR", f"{prefix}:b"),
    )
    assert replies[0] == 1 and replies[2] == 1
    assert "not an integer" in str(replies[1])
    assert batcher.round_trips == 1


async def test_a_script_missing_from_redis_is_loaded_and_run_once(
    redis: Redis, prefix: str
) -> None:
    """Given a script Redis does not know (as after a restart), concurrent calls of it still
    run, each exactly once."""
    script = redis.register_script(f"-- {prefix}\nreturn redis.call('INCR', KEYS[1])")
    assert await redis.script_exists(script.sha) == [False]
    batcher = PipelineBatcher(redis)
    key = f"{prefix}:n"
    replies = await _gather(*((lambda: batcher.script(script, [key], [])) for _ in range(5)))
    assert sorted(replies) == [1, 2, 3, 4, 5]
    assert int(await redis.get(key) or 0) == 5
    assert batcher.round_trips == 2  # NOSCRIPT for all five, then all five again


async def test_a_cancelled_leader_does_not_strand_the_batch(redis: Redis, prefix: str) -> None:
    """Given the first caller of a batch cancelled right after queueing, the batch is still
    sent: the others get their replies and the leader's own call ran too."""
    batcher = PipelineBatcher(redis)
    got: list[Any] = []

    async def leader(scope: anyio.CancelScope) -> None:
        with scope:
            await batcher.command("INCR", f"{prefix}:leader")

    async def follower() -> None:
        got.append(await batcher.command("INCR", f"{prefix}:follower"))

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(leader, scope)
        tg.start_soon(follower)
        tg.start_soon(follower)
        await anyio.lowlevel.checkpoint()
        scope.cancel()
    assert sorted(got) == [1, 2]
    assert await redis.get(f"{prefix}:leader") == b"1"


@pytest.mark.parametrize("detached", [True, False], ids=["reads", "writes"])
async def test_a_reader_stops_waiting_at_its_deadline_and_the_batch_still_goes_out(
    redis: Redis, redis_server: RedisProcess, prefix: str, detached: bool
) -> None:
    """Given Redis paused for 0.6 s (CLIENT PAUSE), a detached (read) batch's first caller
    gives up at its 0.1 s deadline while the others still get their replies once Redis
    answers; a write batch's first caller is held until the batch is sent."""
    batcher = PipelineBatcher(redis, detached=detached)
    await redis.set(f"{prefix}:k", "v")
    got: list[Any] = []
    gave_up_after: list[float] = []

    async def first() -> None:
        began = anyio.current_time()
        with anyio.move_on_after(0.1):
            await batcher.command("GET", f"{prefix}:k")
        gave_up_after.append(anyio.current_time() - began)

    async def other() -> None:
        got.append(await batcher.command("GET", f"{prefix}:k"))

    pauser = client(redis_server.url)
    try:
        await pauser.client_pause(600, all=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(other)
            tg.start_soon(other)
    finally:
        await pauser.aclose()
    assert got == [b"v", b"v"]
    assert batcher.round_trips == 1
    if detached:
        assert gave_up_after[0] < 0.3
    else:
        assert gave_up_after[0] > 0.4  # shielded: the write batch is sent, then it stops


async def test_a_read_batch_nobody_waits_for_any_more_is_dropped(
    redis: Redis, redis_server: RedisProcess, prefix: str
) -> None:
    """Given Redis paused, when every reader of a batch gives up at its deadline, then its
    send is cancelled (no connection stays held for it), and the next reads, once Redis
    answers, go out in a batch of their own and get their replies."""
    batcher = PipelineBatcher(redis, detached=True)
    await redis.set(f"{prefix}:k", "v")

    async def impatient() -> None:
        with anyio.move_on_after(0.1):
            await batcher.command("GET", f"{prefix}:k")

    pauser = client(redis_server.url)
    try:
        await pauser.client_pause(500, all=True)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(impatient)
        await anyio.sleep(0.05)
        assert batcher.sends_under_way == 0  # the dropped batch's send was cancelled
        await anyio.sleep(0.5)  # the pause is over
        got = await _gather(*((lambda: batcher.command("GET", f"{prefix}:k")) for _ in range(2)))
    finally:
        await pauser.aclose()
    assert got == [b"v", b"v"]
    assert batcher.round_trips == 2


async def test_an_unreachable_redis_fails_every_waiter_with_store_unavailable(
    prefix: str,
) -> None:
    """Given Redis unreachable, every fenced write of the batch raises StoreUnavailable."""
    dead = client(f"redis://127.0.0.1:{free_port()}/0")
    store = EventStore(dead, Keys(prefix), retention_s=60)
    try:
        replies = await _gather(
            *((lambda i=i: store.start_strategy(f"scan_{i:032x}", "noop", "w")) for i in range(3))
        )
    finally:
        await dead.aclose()
    assert all(isinstance(r, StoreUnavailable) for r in replies), replies


async def test_fenced_writes_batched_together_keep_their_outcomes(store: EventStore) -> None:
    """Starts, a stale finish and a good finish sent in one batch each keep the outcome they
    would have alone, and the scan ends exactly once."""
    scan_id = await start_scan(store, ["noop", "finder"], enqueue=False)
    first, second = await _gather(
        lambda: store.start_strategy(scan_id, "noop", "w1"),
        lambda: store.start_strategy(scan_id, "finder", "w2"),
    )
    assert (first.status, first.attempt, second.status, second.attempt) == ("ok", 1, "ok", 1)

    def done(strategy: str, attempt: int) -> list[ev.Event]:
        return [
            ev.stamp(
                ev.StrategyCompleted,
                strategy=strategy,
                attempt=attempt,
                opportunities=0,
                duration_ms=1,
            )
        ]

    stale, noop, finder = await _gather(
        lambda: store.finish_strategy(scan_id, "noop", 7, done("noop", 7)),
        lambda: store.finish_strategy(scan_id, "noop", 1, done("noop", 1)),
        lambda: store.finish_strategy(scan_id, "finder", 1, done("finder", 1)),
    )
    assert (stale.status, noop.status, finder.status) == ("stale", "ok", "ok")
    assert (noop.terminal, finder.terminal) == (None, "scan.completed")
    entries = await store.read(scan_id)
    assert [e.type for e in entries if e.type in ev.TERMINAL_TYPES] == ["scan.completed"]
    running = RunningScans(store.redis, store.keys)
    assert scan_id not in {s.scan_id for s in await running.scans()}
