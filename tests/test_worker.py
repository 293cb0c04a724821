"""Strategy consumers over a real Redis: dispatch, retries, fencing, one terminal event."""

from __future__ import annotations

import time

import anyio
import pytest

from consumers.worker import PEERS_EVERY_S
from scanstream import events as ev
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.storage.keys import JOB_GROUP
from scanstream.strategies.api import Strategy, StrategyContext
from tests.support import strategies as ts
from tests.support.jobs import pending_count
from tests.support.scans import start_scan, wait_until_ended, workers_running

pytestmark = pytest.mark.anyio

TEST_STRATEGIES = {
    s.name: s for s in (ts.noop, ts.finder, ts.slow, ts.sleeper, ts.poison, ts.flaky)
}


async def _noop(ctx: StrategyContext) -> None:
    return None


async def test_a_scan_runs_every_strategy_and_ends_completed(
    settings: Settings, store: EventStore
) -> None:
    """Given noop, finder and flaky, a worker runs them and the scan completes with all findings."""
    async with workers_running(settings, TEST_STRATEGIES):
        scan_id = await start_scan(store, ["noop", "finder", "flaky"], {"finds": 4})
        view = await wait_until_ended(store, scan_id)
    assert view.state == "completed"
    assert {s.name: s.state for s in view.strategies.values()} == {
        "noop": "completed",
        "finder": "completed",
        "flaky": "completed",
    }
    assert view.strategies["flaky"].attempts == 2
    assert len(view.opportunities) == 5
    scores = [o.score for o in view.ranked_opportunities()]
    assert scores == sorted(scores, reverse=True)
    assert await pending_count(store.redis, store.keys) == 0


async def test_a_worker_goes_on_when_redis_refuses_its_presence_note(
    settings: Settings, store: EventStore
) -> None:
    """Given Redis refusing the note by which workers see each other (here the key holds
    a string: WRONGTYPE, as a full Redis answers OOM), a worker still runs a scan to its
    end: the note is advisory."""
    await store.redis.set(store.keys.workers, "not a sorted set")
    async with workers_running(settings, TEST_STRATEGIES):
        await anyio.sleep(1.5 * PEERS_EVERY_S)  # a presence note or two refused
        scan_id = await start_scan(store, ["noop", "finder"], {"finds": 2})
        view = await wait_until_ended(store, scan_id)
    assert view.state == "completed"
    assert await store.redis.get(store.keys.workers) == b"not a sorted set"


async def test_a_poison_strategy_is_retried_then_dead_lettered_and_the_scan_still_ends(
    settings: Settings, store: EventStore
) -> None:
    """Given a strategy that always raises, it fails `max_attempts` times, goes to the dead
    letters, and the scan ends completed on the others."""
    async with workers_running(settings, TEST_STRATEGIES):
        scan_id = await start_scan(store, ["poison", "noop"])
        view = await wait_until_ended(store, scan_id)
    assert view.state == "completed"
    poison = view.strategies["poison"]
    assert (poison.state, poison.attempts) == ("failed", settings.max_attempts)
    assert poison.error is not None and poison.error.message == "poisoned input"
    failures = [
        e.event for e in await store.read(scan_id) if isinstance(e.event, ev.StrategyFailed)
    ]
    assert [f.final for f in failures] == [False] * (settings.max_attempts - 1) + [True]
    dead = await store.redis.xrange(store.keys.jobs_of("alice").dead_letters)
    assert [(d[b"scan_id"].decode(), d[b"strategy"].decode()) for _, d in dead] == [
        (scan_id, "poison")
    ]
    assert sum([await store.redis.xlen(p.dead_letters) for p in store.keys.partitions]) == 1


async def test_a_scan_whose_every_strategy_fails_ends_failed(
    settings: Settings, store: EventStore
) -> None:
    """Given only a poison strategy, the scan ends `failed`, not stuck `running`."""
    async with workers_running(settings, TEST_STRATEGIES):
        scan_id = await start_scan(store, ["poison"])
        view = await wait_until_ended(store, scan_id)
    assert view.state == "failed" and view.strategies_failed == 1


@pytest.mark.parametrize("round_", range(12))
async def test_exactly_one_terminal_event_when_50_strategies_finish_together(
    settings: Settings, store: EventStore, round_: int
) -> None:
    """50 no-op strategies on 8 tasks in each of two workers: one terminal event, always."""
    many = {f"n{i:02d}": Strategy(f"n{i:02d}", "noop", _noop) for i in range(50)}
    async with workers_running(settings, many, count=2, concurrency=8):
        scan_id = await start_scan(store, list(many))
        await wait_until_ended(store, scan_id)
        await anyio.sleep(0.05)  # any straggler write would land now
    entries = await store.read(scan_id)
    terminals = [e for e in entries if e.type in ev.TERMINAL_TYPES]
    assert len(terminals) == 1 and entries[-1] is terminals[0]
    assert terminals[0].type == "scan.completed"
    event = terminals[0].event
    assert isinstance(event, ev.ScanCompleted) and event.strategies_completed == 50


async def test_cancel_stops_running_strategies_within_a_second(
    settings: Settings, store: EventStore
) -> None:
    """Given slow strategies running, when the scan is cancelled, they stop within a second
    and nothing is written after scan.cancelled."""
    async with workers_running(settings, TEST_STRATEGIES) as (worker,):
        scan_id = await start_scan(store, ["slow", "sleeper", "noop"], {"slow_s": 20})
        while len(worker.inflight) < 2:
            await anyio.sleep(0.02)
        await anyio.sleep(0.2)
        status, _ = await store.end_scan(
            scan_id, "scan.cancelled", before=[ev.stamp(ev.ScanCancelRequested, user_id="alice")]
        )
        assert status == "ok"
        began = time.monotonic()
        while worker.inflight:
            await anyio.sleep(0.02)
        stopped_after = time.monotonic() - began
        await anyio.sleep(0.3)
    assert stopped_after < 1.0
    entries = await store.read(scan_id)
    assert entries[-1].type == "scan.cancelled"
    view = await wait_until_ended(store, scan_id)
    assert view.state == "cancelled"
    assert {view.strategies["slow"].state, view.strategies["sleeper"].state} == {"cancelled"}
    assert await pending_count(store.redis, store.keys) == 0


async def test_a_job_left_pending_by_a_dead_consumer_is_reclaimed(
    settings: Settings, store: EventStore
) -> None:
    """Given a job taken by a consumer that died before running it, another worker reclaims it
    after the idle time and the scan completes."""
    scan_id = await start_scan(store, ["finder"])
    jobs = store.keys.jobs_of("alice").jobs
    taken = await store.redis.xreadgroup(JOB_GROUP, "ghost", {jobs: ">"}, count=1)
    assert taken
    async with workers_running(settings, TEST_STRATEGIES):
        view = await wait_until_ended(store, scan_id, timeout_s=settings.claim_idle_ms / 1000 + 10)
    assert view.state == "completed" and len(view.opportunities) == 3


async def test_a_superseded_attempt_cannot_write(settings: Settings, store: EventStore) -> None:
    """Given attempt 1 superseded by attempt 2, attempt 1's writes are refused (fenced)."""
    scan_id = await start_scan(store, ["finder"])
    first = await store.start_strategy(scan_id, "finder", "w1")
    second = await store.start_strategy(scan_id, "finder", "w2")
    assert (first.attempt, second.attempt) == (1, 2)
    late = await store.finish_strategy(
        scan_id,
        "finder",
        1,
        [
            ev.stamp(
                ev.StrategyCompleted, strategy="finder", attempt=1, opportunities=0, duration_ms=1
            )
        ],
    )
    assert late.status == "stale"
    assert [e.type for e in await store.read(scan_id)] == [
        "scan.requested",
        "strategy.started",
        "strategy.started",
    ]


def _completed(strategy: str, attempt: int) -> list[ev.Event]:
    return [
        ev.stamp(
            ev.StrategyCompleted, strategy=strategy, attempt=attempt, opportunities=0, duration_ms=1
        )
    ]


async def test_a_start_sent_again_with_its_token_allocates_no_second_attempt(
    store: EventStore,
) -> None:
    """Given a start whose reply was lost, when it is sent again with the same write
    token, it answers the same attempt and the log holds one strategy.started."""
    scan_id = await start_scan(store, ["finder", "noop"], enqueue=False)
    first = await store.start_strategy(scan_id, "finder", "w1", token="tok-1")
    again = await store.start_strategy(scan_id, "finder", "w1", token="tok-1")
    assert (first.status, first.attempt) == (again.status, again.attempt) == ("ok", 1)
    assert again.requested == first.requested is not None
    assert [e.type for e in await store.read(scan_id)] == ["scan.requested", "strategy.started"]
    fresh = await store.start_strategy(scan_id, "finder", "w1", token="tok-2")
    assert fresh.attempt == 2


async def test_a_finish_sent_again_with_its_token_counts_once(store: EventStore) -> None:
    """Given the finish that ended a scan, when it is sent again with the same write token,
    it answers what it did the first time, and the scan holds one terminal event and
    one completion."""
    scan_id = await start_scan(store, ["noop"], enqueue=False)
    attempt = (await store.start_strategy(scan_id, "noop", "w1")).attempt
    first = await store.finish_strategy(
        scan_id, "noop", attempt, _completed("noop", attempt), token="fin"
    )
    again = await store.finish_strategy(
        scan_id, "noop", attempt, _completed("noop", attempt), token="fin"
    )
    assert first == again
    assert (first.status, first.terminal) == ("ok", "scan.completed")
    types = [e.type for e in await store.read(scan_id)]
    assert types == ["scan.requested", "strategy.started", "strategy.completed", "scan.completed"]
    other = await store.finish_strategy(
        scan_id, "noop", attempt, _completed("noop", attempt), token="other"
    )
    assert other.status == "ended"
    assert await store.redis.ttl(store.keys.scan(scan_id).writes) > 0  # expires with the scan


async def test_a_strategy_that_cancels_itself_on_a_thread_fails_its_attempt_only() -> None:
    """Given thread isolation and a strategy that raises CancelledError on its own, its
    attempt ends as a failure (retried like any error), and the executor serves the next
    attempt: the worker is not taken down."""
    import asyncio

    from consumers.isolation.attempt import AttemptSpec
    from consumers.isolation.threads import ThreadExecutor

    async def cancels_itself(ctx: StrategyContext) -> None:
        raise asyncio.CancelledError

    async def write(pairs: object) -> str:
        return "ok"

    executor = ThreadExecutor(lambda params: None)
    spec = AttemptSpec("scan_" + "0" * 32, "x", 1, {})
    try:
        failed = await executor.run(Strategy("x", "", cancels_itself), spec, write)
        fine = await executor.run(Strategy("x", "", _noop), spec, write)
    finally:
        await executor.aclose()
    assert failed.error is not None and failed.error.type == "CancelledError"
    assert fine.error is None and fine.stopped is None
