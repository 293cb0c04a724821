"""Strategies that compute hard without awaiting, crash or run out of memory, against real
`scanstream worker` processes, with the DEFAULT claim idle time and heartbeat."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from scanstream import events as ev
from scanstream.projection import fold_all
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.support.faults import (
    FAULT_MODULES,
    assert_log_is_sound,
    consumer_name,
    started_events,
    worker,
)
from tests.support.jobs import pending_count
from tests.support.procs import running
from tests.support.scans import start_scan, wait_for, wait_until_ended

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def default_timings(settings: Settings) -> Settings:
    """The shipped claim idle time and heartbeat: what an operator runs."""
    defaults = Settings()
    return settings.with_(
        strategy_modules=FAULT_MODULES,
        claim_idle_ms=defaults.claim_idle_ms,
        heartbeat_ms=defaults.heartbeat_ms,
        retry_backoff_s=0.05,
    )


def attempts_by_strategy(entries: list[ev.LogEntry]) -> dict[str, list[str]]:
    """Strategy -> the worker of each of its attempts, in order."""
    out: dict[str, list[str]] = {}
    for _, started in started_events(entries):
        out.setdefault(started.strategy, []).append(started.worker)
    return out


def failures(entries: list[ev.LogEntry], strategy: str) -> list[ev.StrategyFailed]:
    return [
        e.event
        for e in entries
        if isinstance(e.event, ev.StrategyFailed) and e.event.strategy == strategy
    ]


async def started_at(store: EventStore, scan_id: str, strategy: str) -> float:
    """Wall time at which the strategy's first attempt started (waits for it)."""

    async def started() -> float | None:
        for e in await store.read(scan_id):
            if isinstance(e.event, ev.StrategyStarted) and e.event.strategy == strategy:
                return ev.ts_ms(e.event.ts) / 1000
        return None

    return float(await wait_for(started, 20, f"{strategy} to start"))


async def test_a_strategy_that_never_awaits_costs_no_one_their_claim(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a worker running a strategy that computes 60 s without an await beside a
    well-behaved one, and a standby worker, both run exactly once, on the first worker,
    and the scan completes (the standby never takes a job whose heartbeat went on)."""
    s = default_timings(settings)
    busy, standby = worker(s, tmp_path, "busy"), worker(s, tmp_path, "standby")
    with running(busy):
        busy_name = await consumer_name(busy)
        scan_id = await start_scan(store, ["hog", "steady_a"], {"hog_s": 60, "slow_s": 3})
        await started_at(store, scan_id, "hog")
        with running(standby):
            await consumer_name(standby)
            view = await wait_until_ended(store, scan_id, timeout_s=120)
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert attempts_by_strategy(entries) == {"hog": [busy_name], "steady_a": [busy_name]}
    assert view.strategies["hog"].opportunities == 1
    assert view.strategies["steady_a"].opportunities == 20
    assert_log_is_sound(entries)


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_a_time_limit_stops_a_strategy_that_never_awaits(
    settings: Settings, store: EventStore, tmp_path: Path, isolation: str
) -> None:
    """Given a 1 s time limit, a strategy computing 60 s without an await fails as a
    timeout within 3 s of its start and stops computing, and another user's scan started
    after it is finished by the same worker before that."""
    s = default_timings(settings)
    beat = tmp_path / "beat"
    proc = worker(
        s, tmp_path, isolation, SCANSTREAM_STRATEGY_TIMEOUT="1", SCANSTREAM_ISOLATION=isolation
    )
    with running(proc):
        await consumer_name(proc)
        hog_scan = await start_scan(store, ["hog"], {"hog_s": 60, "beat_file": str(beat)})
        began = await started_at(store, hog_scan, "hog")
        other = await start_scan(store, ["finder"], {"finds": 3}, user_id="bob")
        hog_view = await wait_until_ended(store, hog_scan, timeout_s=10)
        other_view = await wait_until_ended(store, other, timeout_s=10)
        await anyio.sleep(1.2)  # past any beat the hog could still write
    entries = await store.read(hog_scan)
    [failed] = failures(entries, "hog")
    failed_at = ev.ts_ms(failed.ts) / 1000
    assert hog_view.state == "failed"
    assert failed.error.type == "Timeout" and failed.final
    assert failed_at - began < 3.0, f"timed out after {failed_at - began:.2f}s"
    assert other_view.state == "completed"
    other_end = await store.last_entry(other)
    assert other_end is not None and other_end.event is not None
    assert ev.ts_ms(other_end.event.ts) / 1000 < failed_at, "bob's scan waited for the hog"
    assert float(beat.read_text()) < failed_at + 1.0, "the strategy went on computing"


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_cancel_stops_a_strategy_that_never_awaits_within_a_second(
    settings: Settings, store: EventStore, tmp_path: Path, isolation: str
) -> None:
    """Given a strategy computing without an await, when its scan is cancelled, it stops
    computing within 1 s and its job is acknowledged."""
    s = default_timings(settings)
    beat = tmp_path / "beat"
    proc = worker(s, tmp_path, isolation, SCANSTREAM_ISOLATION=isolation)
    with running(proc):
        await consumer_name(proc)
        scan_id = await start_scan(store, ["hog"], {"hog_s": 60, "beat_file": str(beat)})
        await started_at(store, scan_id, "hog")
        await wait_for(beat.exists, 10, "the strategy to compute")
        cancelled_at = time.time()
        status, _ = await store.end_scan(scan_id, "scan.cancelled")
        assert status == "ok"

        async def acknowledged() -> bool:
            return await pending_count(store.redis, store.keys) == 0

        await wait_for(acknowledged, 5, "the job to be acknowledged")
        await anyio.sleep(1.2)
    last_beat = float(beat.read_text())
    assert last_beat < cancelled_at + 1.0, f"computed {last_beat - cancelled_at:.2f}s on"


@pytest.mark.parametrize(
    ("strategy", "error_type"),
    [("crasher", "StrategyCrashed"), ("self_kill", "StrategyCrashed"), ("glutton", "MemoryError")],
)
async def test_in_process_mode_a_crash_fails_only_its_own_attempt(
    settings: Settings, store: EventStore, tmp_path: Path, strategy: str, error_type: str
) -> None:
    """Given process isolation, a strategy that exits its process, is SIGKILLed (as by the
    out-of-memory killer) or allocates until it fails, fails its attempts; the strategy
    beside it in the same worker completes, and the worker lives on."""
    s = default_timings(settings)
    proc = worker(
        s, tmp_path, SCANSTREAM_ISOLATION="process", SCANSTREAM_STRATEGY_MAX_MEMORY_MB="1024"
    )
    with running(proc):
        await consumer_name(proc)
        scan_id = await start_scan(store, [strategy, "steady_a"], {"slow_s": 1})
        view = await wait_until_ended(store, scan_id, timeout_s=60)
        assert proc.process is not None and proc.process.poll() is None, "the worker died"
    entries = await store.read(scan_id)
    failed = failures(entries, strategy)
    assert view.state == "completed"
    assert view.strategies[strategy].state == "failed"
    assert view.strategies["steady_a"].state == "completed"
    assert view.strategies["steady_a"].opportunities == 20
    assert [f.error.type for f in failed] == [error_type] * s.max_attempts, failed
    assert failed[-1].final
    assert fold_all(scan_id, entries).strategies_failed == 1
