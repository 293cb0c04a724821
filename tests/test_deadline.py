"""`scanstream.deadline`: one bound per request on its Redis work, with shared timers."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from scanstream.deadline import TICK_S, Deadline
from scanstream.errors import StoreUnavailable

pytestmark = pytest.mark.anyio


async def test_an_expired_deadline_is_store_unavailable_on_time() -> None:
    """A block still waiting when its deadline passes fails with StoreUnavailable, at most
    one tick late."""
    deadline = Deadline(0.3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.3 s"), deadline():
        await asyncio.sleep(10)
    assert 0.3 <= time.monotonic() - started < 0.3 + TICK_S + 0.1


async def test_a_block_that_finishes_in_time_is_untouched() -> None:
    """Many concurrent blocks that finish in time return normally, and leave nothing due."""
    deadline = Deadline(0.2)

    async def quick(n: int) -> int:
        with deadline():
            await asyncio.sleep(0.01)
        return n

    assert await asyncio.gather(*(quick(n) for n in range(100))) == list(range(100))
    await asyncio.sleep(0.2 + 2 * TICK_S)  # every bucket's timer has fired by now
    assert not deadline._buckets
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_another_cancellation_is_not_taken_for_an_expiry() -> None:
    """A cancellation from outside (the client went away, an outer timeout) goes through
    unchanged, whether or not the deadline also passed meanwhile."""
    deadline = Deadline(5.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            with deadline():
                await asyncio.sleep(10)
    short = Deadline(0.1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            with short():
                await asyncio.sleep(10)


async def test_nested_deadlines_fail_once_at_the_first_expiry() -> None:
    """An inner deadline inside an outer one: the earlier expiry wins, as one failure."""
    outer, inner = Deadline(0.2), Deadline(5.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"0\.2 s"), outer(), inner():
        await asyncio.sleep(10)
    assert time.monotonic() - started < 0.2 + TICK_S + 0.1


async def test_zero_switches_the_deadline_off() -> None:
    """`SCANSTREAM_REQUEST_TIMEOUT=0`: no bound at all."""
    deadline = Deadline(0)
    with deadline():
        await asyncio.sleep(0.05)
    assert not deadline._buckets


async def test_an_expiry_inside_an_anyio_task_group_stays_a_store_error() -> None:
    """Inside an anyio task group (as an SSE stream's replay runs), an expiry is a
    StoreUnavailable the body can handle, and the group carries on unharmed."""
    deadline = Deadline(0.2)
    outcome = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep_forever)
        try:
            with deadline():
                await anyio.sleep(5)
        except StoreUnavailable:
            outcome.append("store error")
        await anyio.sleep(0.05)  # not cancelled: the expiry was withdrawn
        outcome.append("went on")
        tg.cancel_scope.cancel()
    assert outcome == ["store error", "went on"]
