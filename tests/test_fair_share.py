"""Fair share between users: one user's backlog never stands in front of another's work,
a user's running strategies are capped across workers, and `priority` orders a user's
own scans. Real workers on a real Redis (and a Redis Cluster)."""

from __future__ import annotations

import time

import anyio
import pytest

from scanstream import events as ev
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from tests.support import strategies as ts
from tests.support.backends import on_both_backends
from tests.support.scans import start_scan, wait_until_ended, workers_running

pytestmark = pytest.mark.anyio
STRATEGIES = {"sleeper": ts.sleeper, "noop": ts.noop}


def user_on(keys: Keys, same_as: str, same: bool) -> str:
    """A user whose jobs share (or not) `same_as`'s partition."""
    target = keys.jobs_of(same_as).index
    for i in range(1000):
        name = f"bob{i}"
        if (keys.jobs_of(name).index == target) == same:
            return name
    raise AssertionError("no such user name")


@on_both_backends
@pytest.mark.parametrize("same_partition", [True, False], ids=["same-partition", "other"])
async def test_a_flood_of_one_user_does_not_hold_up_another(
    settings: Settings, storage: Storage, same_partition: bool
) -> None:
    """One worker; alice queues 150 scans of a 1 s strategy, then bob starts a one-strategy
    scan: bob's completes within 5 s, long before alice's backlog (~19 s of work)."""
    store = storage.events
    bob = user_on(storage.keys, "alice", same_partition)
    async with workers_running(settings, STRATEGIES, concurrency=8):
        for _ in range(150):
            await start_scan(store, ["sleeper"], {"slow_s": 1.0}, jobs=storage.jobs)
        await anyio.sleep(0.5)  # the worker is busy with alice's work
        began = time.monotonic()
        bobs = await start_scan(store, ["sleeper"], {"slow_s": 1.0}, user_id=bob, jobs=storage.jobs)
        view = await wait_until_ended(store, bobs, timeout_s=15)
        took = time.monotonic() - began
        left = await storage.running.scans(1000)
    print(f"\nbob's scan ({'same' if same_partition else 'other'} partition) done in {took:.2f}s")
    assert view.state == "completed"
    assert took < 5.0
    assert len(left) > 100  # alice's backlog was still there


def running_at_once(entries: list[ev.LogEntry], names: set[str]) -> int:
    """The most strategies of `names`' scans running at the same time, from their logs."""
    marks = []
    for e in entries:
        if isinstance(e.event, ev.StrategyStarted):
            marks.append((e.id, 1))
        elif isinstance(e.event, (ev.StrategyCompleted, ev.StrategyFailed)):
            marks.append((e.id, -1))
    marks.sort(key=lambda m: tuple(int(x) for x in m[0].split("-")))
    most = now = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


@on_both_backends
async def test_a_user_never_has_more_running_jobs_than_the_cap(settings: Settings) -> None:
    """USER_MAX_RUNNING_JOBS=2, two workers: alice's 8 scans never run more than 2
    strategies at once (from their logs), while bob's scan runs beside them at once."""
    capped = settings.with_(user_max_running_jobs=2)
    storage = Storage.connect(capped)
    store = storage.events
    try:
        async with workers_running(capped, STRATEGIES, count=2, concurrency=8):
            alices = [
                await start_scan(store, ["sleeper"], {"slow_s": 0.4}, jobs=storage.jobs)
                for _ in range(8)
            ]
            await anyio.sleep(0.3)
            began = time.monotonic()
            bobs = await start_scan(store, ["noop"], user_id="bob", jobs=storage.jobs)
            await wait_until_ended(store, bobs, timeout_s=10)
            bob_took = time.monotonic() - began
            for scan_id in alices:
                await wait_until_ended(store, scan_id, timeout_s=20)
        starts_ends = await _logs_in_time_order(store, alices)
    finally:
        await storage.aclose()
    assert running_at_once(starts_ends, set(alices)) == 2
    assert bob_took < 1.0


async def _logs_in_time_order(store: EventStore, scan_ids: list[str]) -> list[ev.LogEntry]:
    """Every entry of these scans; stream ids are time-based, so they order across scans
    (each scan's stream is on its own slot, but one clock)."""
    entries: list[ev.LogEntry] = []
    for scan_id in scan_ids:
        entries += await store.read(scan_id)
    return entries


async def test_priority_orders_a_users_own_waiting_scans(settings: Settings) -> None:
    """With one running job allowed, alice's waiting scans run highest priority first,
    then oldest first."""
    capped = settings.with_(user_max_running_jobs=1)
    storage = Storage.connect(capped)
    store = storage.events
    try:
        low = [
            await start_scan(store, ["sleeper"], {"slow_s": 0.2}, jobs=storage.jobs)
            for _ in range(3)
        ]
        high = await start_scan(store, ["sleeper"], {"slow_s": 0.2}, jobs=storage.jobs, priority=9)
        async with workers_running(capped, STRATEGIES, concurrency=4):
            for scan_id in [*low, high]:
                await wait_until_ended(store, scan_id, timeout_s=10)
        ended_at = {}
        for scan_id in [*low, high]:
            last = (await store.read(scan_id))[-1]
            ended_at[scan_id] = tuple(int(x) for x in last.id.split("-"))
    finally:
        await storage.aclose()
    order = sorted(ended_at, key=lambda s: ended_at[s])
    # The first low one was already in the stream when the high one came (the stream keeps
    # a few jobs ready); the high one overtakes the two still waiting in the lane.
    assert order == [low[0], high, low[1], low[2]]
