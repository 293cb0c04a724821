"""Starting scans the way the API does, waiting for them, and in-process workers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from consumers.worker import Worker
from scanstream import events as ev
from scanstream.ids import new_scan_id
from scanstream.market import load_market
from scanstream.projection import ScanView, fold_all
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.storage.jobs import JobQueue
from scanstream.strategies.api import Strategy


def market_factory(params: Mapping[str, Any]) -> Any:
    return load_market(params)


async def start_scan(
    store: EventStore,
    strategies: Sequence[str],
    params: dict[str, Any] | None = None,
    user_id: str = "alice",
    enqueue: bool | Sequence[str] = True,
    *,
    jobs: JobQueue | None = None,
    priority: int = 0,
) -> str:
    """What POST /v1/scans does underneath: scan.requested, then one job per strategy
    (or only for the strategies `enqueue` names; none if it is False)."""
    scan_id = new_scan_id()
    requested = ev.stamp(
        ev.ScanRequested, user_id=user_id, strategies=list(strategies), params=params or {}
    )
    await store.create_scan(scan_id, requested)
    if enqueue:
        queue = jobs or JobQueue(store.redis, store.keys)
        await queue.ensure_group()
        queued = strategies if enqueue is True else enqueue
        await queue.enqueue(scan_id, user_id, list(queued), priority=priority)
    return scan_id


async def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await anyio.sleep(interval_s)


async def wait_until_ended(store: EventStore, scan_id: str, timeout_s: float = 30.0) -> ScanView:
    async def ended() -> ScanView | None:
        view = fold_all(scan_id, await store.read(scan_id))
        return view if view.terminal else None

    return await wait_for(ended, timeout_s, f"{scan_id} to end")  # type: ignore[no-any-return]


@asynccontextmanager
async def workers_running(
    settings: Settings, strategies: Mapping[str, Strategy], count: int = 1, concurrency: int = 8
) -> AsyncIterator[list[Worker]]:
    """`count` real workers in this process, drained (as on SIGTERM) at the end of the block."""

    def market(params: Mapping[str, Any]) -> Any:
        return load_market(params, settings.csv)

    started = [Worker(settings, strategies, market, concurrency=concurrency) for _ in range(count)]
    async with anyio.create_task_group() as tg:
        for worker in started:
            await tg.start(worker.run)
        yield started
        for worker in started:
            await worker.drain(grace_s=5.0)
