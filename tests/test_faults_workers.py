"""Fault injection against real `scanstream worker` processes and a real Redis: workers
killed, frozen and woken, slow but alive, poisoned, racing to end a scan, cancelled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from consumers.worker import PEERS_EVERY_S
from scanstream import events as ev
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.support.backends import on_both_backends
from tests.support.faults import (
    assert_log_is_sound,
    consumer_name,
    fault_settings,
    log_records,
    started_events,
    worker,
)
from tests.support.jobs import pending_count
from tests.support.procs import REPO, env_for, running
from tests.support.scans import (
    start_scan,
    wait_for,
    wait_until_ended,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STEADY = ["steady_a", "steady_b", "steady_c"]


def _index_of_start(entries: list[ev.LogEntry], match: Callable[[ev.StrategyStarted], bool]) -> int:
    return next(
        i
        for i, e in enumerate(entries)
        if isinstance(e.event, ev.StrategyStarted) and match(e.event)
    )


def _steps_found(entries: list[ev.LogEntry], strategy: str) -> list[str]:
    return [
        e.event.opportunity.id
        for e in entries
        if isinstance(e.event, ev.OpportunityFound) and e.event.strategy == strategy
    ]


async def _started_by(store: EventStore, scan_id: str, name: str, count: int) -> bool:
    entries = await store.read(scan_id)
    return sum(1 for _, s in started_events(entries) if s.worker == name) >= count


@on_both_backends
async def test_a_killed_workers_strategies_are_finished_by_another(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given worker A running three slow strategies, when A is SIGKILLed, worker B takes them
    over as attempt 2, the scan completes, and every opportunity appears exactly once."""
    s = fault_settings(settings)
    a, b = worker(s, tmp_path, "a"), worker(s, tmp_path, "b")
    with running(a):
        name_a = await consumer_name(a)
        scan_id = await start_scan(store, STEADY, {"slow_s": 2.0})
        await wait_for(lambda: _started_by(store, scan_id, name_a, 3), 10, "A to start all three")
        await wait_for(lambda: _progressed(store, scan_id), 10, "some findings of attempt 1")
        with running(b):
            name_b = await consumer_name(b)
            a.signal(signal.SIGKILL)
            view = await wait_until_ended(store, scan_id, timeout_s=20)
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert_log_is_sound(entries)
    retried = {
        s.strategy: (s.attempt, s.worker) for _, s in started_events(entries) if s.attempt == 2
    }
    assert retried == {name: (2, name_b) for name in STEADY}
    assert {s.name: s.attempts for s in view.strategies.values()} == dict.fromkeys(STEADY, 2)
    for name in STEADY:  # found again by attempt 2, listed once
        assert len(set(_steps_found(entries, name))) == 20
        assert view.strategies[name].opportunities == 20
    assert len(view.opportunities) == 60
    assert await pending_count(store.redis, store.keys) == 0


async def _progressed(store: EventStore, scan_id: str) -> bool:
    return any(isinstance(e.event, ev.OpportunityFound) for e in await store.read(scan_id))


@on_both_backends
async def test_a_frozen_worker_that_wakes_up_writes_nothing(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given worker A SIGSTOPped past the idle time while running strategies and B taking
    them over, when A is SIGCONTed, A writes nothing more to the scan and results are exactly
    once."""
    s = fault_settings(settings)
    a, b = worker(s, tmp_path, "a"), worker(s, tmp_path, "b")
    names = ["steady_a", "sleeper"]  # one writes progress as it goes, one only at the end
    with running(a):
        name_a = await consumer_name(a)
        scan_id = await start_scan(store, names, {"slow_s": 2.5})
        await wait_for(lambda: _started_by(store, scan_id, name_a, 2), 10, "A to start both")
        await anyio.sleep(0.3)
        a.signal(signal.SIGSTOP)
        with running(b):
            name_b = await consumer_name(b)
            await wait_for(lambda: _started_by(store, scan_id, name_b, 2), 10, "B to reclaim both")
            a.signal(signal.SIGCONT)
            view = await wait_until_ended(store, scan_id, timeout_s=20)
            await anyio.sleep(1.0)  # A's timers have all fired by now: any late write lands
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert_log_is_sound(entries)
    for name in names:  # after attempt 2 started, nothing of attempt 1
        taken_over = _index_of_start(
            entries, lambda st, n=name: st.strategy == n and st.attempt == 2
        )
        later = [e.event for e in entries[taken_over:] if getattr(e.event, "strategy", "") == name]
        assert {getattr(x, "attempt", 0) for x in later} == {2}, later
    first_of_b = _index_of_start(entries, lambda st: st.worker == name_b)
    assert not [
        e
        for e in entries[first_of_b:]
        if isinstance(e.event, ev.StrategyStarted) and e.event.worker == name_a
    ]
    assert view.strategies["steady_a"].opportunities == 20
    assert len(set(_steps_found(entries, "steady_a"))) == 20
    assert len(view.opportunities) == 21
    woke = [
        r
        for r in log_records(a)
        if r.get("scan_id") == scan_id and ("lost" in r["message"] or "claim lost" in r["message"])
    ]
    assert woke, "the woken worker did not notice it lost its jobs"
    assert await pending_count(store.redis, store.keys) == 0


async def test_a_slow_heartbeating_strategy_is_never_run_twice(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a strategy that sleeps more than twice the claim idle time with two workers
    polling for idle jobs, it runs once: one strategy.started, attempt 1."""
    s = fault_settings(settings)
    with running(worker(s, tmp_path, "a"), worker(s, tmp_path, "b")) as procs:
        for p in procs:
            await consumer_name(p)
        scan_id = await start_scan(store, ["sleeper"], {"slow_s": 3.5})
        view = await wait_until_ended(store, scan_id, timeout_s=20)
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert [st.attempt for _, st in started_events(entries)] == [1]
    assert_log_is_sound(entries)


@on_both_backends
async def test_a_poison_strategy_is_retried_dead_lettered_and_the_scan_ends(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a strategy that always raises, it is retried with each attempt visible, then
    dead-lettered (listed by `scanstream inspect`), and the scan still ends; a re-drive of
    it is refused because its failure is final in the scan's log."""
    s = fault_settings(settings)
    with running(worker(s, tmp_path, "a"), worker(s, tmp_path, "b")) as procs:
        for p in procs:
            await consumer_name(p)
        scan_id = await start_scan(store, ["poison", "finder"])
        view = await wait_until_ended(store, scan_id, timeout_s=20)
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert_log_is_sound(entries)
    failures = [e.event for e in entries if isinstance(e.event, ev.StrategyFailed)]
    assert [(f.attempt, f.final) for f in failures] == [(1, False), (2, False), (3, True)]
    assert view.strategies["poison"].state == "failed"
    env = env_for(s)
    listed = json.loads(_inspect(env, "dead-letters", "--json").stdout)
    assert [(d["scan_id"], d["strategy"], d["attempts"]) for d in listed["dead_letters"]] == [
        (scan_id, "poison", 3)
    ]
    redrive = _inspect(env, "redrive", "--all", "--json")
    assert redrive.returncode == 1
    [result] = json.loads(redrive.stdout)["results"]
    assert result["outcome"] == "refused" and "ended" in result["detail"]


def _inspect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanstream", "inspect", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_fifty_strategies_finishing_together_write_one_terminal_event(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given two worker processes of 8 tasks each, when 50 no-op strategies finish at
    once, exactly one terminal event is written, last; ten scans in a row."""
    s = fault_settings(settings, strategy_modules=("tests.support.many_strategies",))
    names = [f"n{i:02d}" for i in range(50)]
    with running(worker(s, tmp_path, "a"), worker(s, tmp_path, "b")) as procs:
        for p in procs:
            await consumer_name(p)
        scan_ids = []
        for _ in range(10):
            scan_id = await start_scan(store, names)
            await wait_until_ended(store, scan_id, timeout_s=20)
            scan_ids.append(scan_id)
        await anyio.sleep(0.2)  # any straggler write would land now
    workers_seen = set()
    for scan_id in scan_ids:
        entries = await store.read(scan_id)
        assert_log_is_sound(entries)
        end = entries[-1].event
        assert isinstance(end, ev.ScanCompleted) and end.strategies_completed == 50
        workers_seen |= {st.worker for _, st in started_events(entries)}
    assert len(workers_seen) == 2  # both processes raced for the end


@pytest.mark.parametrize("timings", ["short", "default"])
async def test_two_idle_workers_share_one_scans_jobs(
    settings: Settings, store: EventStore, tmp_path: Path, timings: str
) -> None:
    """Given two idle worker processes of 16 slots each that have just finished a scan,
    when one scan of 14 strategies that each compute for 0.3 s without awaiting is
    created, each worker runs at least 4 of them: a second worker shortens a scan of
    heavy strategies (the worker woken first took 13 of 14)."""
    shipped = Settings()
    s = fault_settings(settings, strategy_modules=("tests.support.many_strategies",))
    if timings == "default":  # the claim idle time and heartbeat an operator runs
        s = s.with_(claim_idle_ms=shipped.claim_idle_ms, heartbeat_ms=shipped.heartbeat_ms)
    names = [f"n{i:02d}" for i in range(14)]
    with running(
        worker(s, tmp_path, "a", concurrency=16), worker(s, tmp_path, "b", concurrency=16)
    ) as procs:
        workers = [await consumer_name(p) for p in procs]
        # Both workers' readers are blocked waiting for jobs, and each has seen the other.
        await anyio.sleep(2.5 * PEERS_EVERY_S)
        await wait_until_ended(store, await start_scan(store, names), timeout_s=20)
        scan_id = await start_scan(store, names, {"compute_s": 0.3})
        view = await wait_until_ended(store, scan_id, timeout_s=30)
    entries = await store.read(scan_id)
    assert view.state == "completed"
    assert_log_is_sound(entries)
    per_worker = Counter(st.worker for _, st in started_events(entries))
    assert set(per_worker) == set(workers), per_worker
    assert min(per_worker.values()) >= 4, per_worker


async def test_cancel_stops_strategies_in_worker_processes_within_a_second(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given slow strategies running in two worker processes, when the scan is cancelled,
    every job is stopped and acknowledged within a second and nothing follows
    scan.cancelled."""
    s = fault_settings(settings)
    names = [*STEADY, "sleeper"]
    with running(
        worker(s, tmp_path, "a", concurrency=2), worker(s, tmp_path, "b", concurrency=2)
    ) as procs:
        for p in procs:
            await consumer_name(p)
        scan_id = await start_scan(store, names, {"slow_s": 30})
        await wait_for(lambda: _started_count(store, scan_id, 4), 10, "all four to start")
        await anyio.sleep(0.3)
        status, _ = await store.end_scan(
            scan_id, "scan.cancelled", before=[ev.stamp(ev.ScanCancelRequested, user_id="alice")]
        )
        assert status == "ok"
        began = time.monotonic()
        await wait_for(lambda: _nothing_pending(store), 5, "every job to be acknowledged")
        stopped_after = time.monotonic() - began
        await anyio.sleep(0.5)
        records = [r for p in procs for r in log_records(p)]
    assert stopped_after < 1.0, stopped_after
    entries = await store.read(scan_id)
    assert entries[-1].type == "scan.cancelled"
    assert_log_is_sound(entries)
    stops = [
        r
        for r in records
        if r.get("scan_id") == scan_id and r["message"] == "strategy stopped: cancelled"
    ]
    assert sorted(r["strategy"] for r in stops) == sorted(names)
    assert all(r.get("attempt") == 1 for r in stops)


async def _started_count(store: EventStore, scan_id: str, n: int) -> bool:
    return len(started_events(await store.read(scan_id))) >= n


async def _nothing_pending(store: EventStore) -> bool:
    return await pending_count(store.redis, store.keys) == 0
