"""Redis itself failing under real worker processes: killed with SIGKILL mid-scan and
restarted on the same port and data directory, with AOF `appendfsync always`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream import events as ev
from scanstream.embedded import RedisProcess
from scanstream.errors import StoreUnavailable
from scanstream.projection import fold_all
from scanstream.settings import Settings
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from tests.support.api_events import auth
from tests.support.faults import (
    assert_log_is_sound,
    consumer_name,
    fault_settings,
    log_records,
    worker,
)
from tests.support.procs import api_proc, running
from tests.support.scans import (
    start_scan,
    wait_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of this test's own, with AOF fsync on every write."""
    server = RedisProcess(data_dir=tmp_path / "redis", appendfsync="always").start()
    yield server
    server.kill()


async def _read_or_none(store: EventStore, scan_id: str) -> list[ev.LogEntry] | None:
    try:
        return await store.read(scan_id)
    except StoreUnavailable:
        return None


async def test_a_scan_survives_redis_being_killed_and_restarted(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """Given a scan running on two workers, when Redis is SIGKILLed and restarted from its
    AOF (always), every event read before the kill is still there, and the scan completes
    with each opportunity once."""
    s = fault_settings(settings, redis_url=own_redis.url)
    redis = client(own_redis.url)
    store = EventStore(redis, Keys(s.prefix, s.job_partitions), retention_s=s.retention_s)
    names = ["steady_a", "steady_b", "finder"]
    procs = (worker(s, tmp_path, "a"), worker(s, tmp_path, "b"))
    try:
        with running(*procs):
            for p in procs:
                await consumer_name(p)
            scan_id = await start_scan(store, names, {"slow_s": 2.0})

            async def some_findings() -> list[ev.LogEntry] | None:
                entries = await store.read(scan_id)
                found = [e for e in entries if isinstance(e.event, ev.OpportunityFound)]
                return entries if len(found) >= 12 else None

            await wait_for(some_findings, 10, "findings before the crash")
            before = await store.read(scan_id)  # acknowledged: Redis answered with them
            own_redis.kill()
            await anyio.sleep(0.5)
            own_redis.start()

            async def ended() -> list[ev.LogEntry] | None:
                entries = await _read_or_none(store, scan_id)
                return entries if entries and fold_all(scan_id, entries).terminal else None

            after = await wait_for(ended, 30, "the scan to end after the restart", 0.05)
            records = [r for p in procs for r in log_records(p)]
    finally:
        await redis.aclose()
    assert {e.id: (e.type, e.data) for e in before}.items() <= {
        e.id: (e.type, e.data) for e in after
    }.items()
    view = fold_all(scan_id, after)
    story = [
        (
            e.type,
            getattr(e.event, "strategy", ""),
            getattr(e.event, "attempt", 0),
            getattr(e.event, "error", None),
        )
        for e in after
        if e.type != "opportunity.found"
    ]
    assert view.state == "completed", story
    assert_log_is_sound(after)
    assert view.strategies["steady_a"].opportunities == 20, story
    assert view.strategies["steady_b"].opportunities == 20, story
    assert len(view.opportunities) == 43, story
    assert any("Redis unavailable" in r["message"] for r in records), "no worker saw the outage"
    assert all(p.process is not None for p in procs)


async def test_a_redis_restart_costs_seconds_with_the_default_settings(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """Given an API process and two workers with the default claim idle time and
    heartbeat, a running scan and a client polling its status and results, when Redis is
    SIGKILLed and restarted, the scan ends within 5 s of Redis answering (plus the work it
    had left), each strategy runs once, each finding is there once, and not one request
    sent after Redis answers again is a 503."""
    defaults = Settings()
    s = fault_settings(
        settings,
        redis_url=own_redis.url,
        claim_idle_ms=defaults.claim_idle_ms,
        heartbeat_ms=defaults.heartbeat_ms,
    )
    names, slow_s = ["steady_a", "steady_b", "steady_c"], 4.0
    api = api_proc(s, tmp_path)
    procs = (api, worker(s, tmp_path, "a"), worker(s, tmp_path, "b"))
    answers: list[tuple[float, int]] = []  # (monotonic time sent, HTTP status)
    with running(*procs):
        for p in procs[1:]:
            await consumer_name(p)
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=10) as http:
            created = await http.post(
                "/v1/scans", json={"strategies": names, "params": {"slow_s": slow_s}}
            )
            assert created.status_code == 202, created.text
            scan_id = created.json()["scan_id"]
            began = time.monotonic()

            async def poll() -> None:
                while True:
                    for path in (f"/v1/scans/{scan_id}", f"/v1/scans/{scan_id}/results"):
                        sent = time.monotonic()
                        try:
                            answers.append((sent, (await http.get(path)).status_code))
                        except httpx.HTTPError:
                            answers.append((sent, 0))
                    await anyio.sleep(0.05)

            async def found_some() -> bool:
                reply = await http.get(f"/v1/scans/{scan_id}")
                return reply.status_code == 200 and reply.json()["opportunities_found"] >= 12

            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                await wait_for(found_some, 10, "findings before the crash")
                killed = time.monotonic()
                own_redis.kill()
                await anyio.sleep(1.0)
                own_redis.start()
                back = time.monotonic()  # start() returns once Redis answers PING

                async def ended() -> dict | None:
                    reply = await http.get(f"/v1/scans/{scan_id}")
                    body = reply.json() if reply.status_code == 200 else {}
                    return body if body.get("state") in ("completed", "failed") else None

                final = await wait_for(ended, 40, "the scan to end after the restart", 0.05)
                finished = time.monotonic()
                tg.cancel_scope.cancel()
            log = (await http.get(f"/v1/scans/{scan_id}/log", params={"limit": 1000})).json()
    store_entries = log["events"]
    left_to_do = max(0.0, slow_s - (killed - began))
    assert final["state"] == "completed"
    assert finished - back < 5.0 + left_to_do, (
        f"ended {finished - back:.1f}s after Redis answered ({left_to_do:.1f}s of work left)"
    )
    starts = [e["strategy"] for e in store_entries if e["type"] == "strategy.started"]
    assert sorted(starts) == sorted(names), f"attempts: {starts}"
    found = [e["opportunity"]["id"] for e in store_entries if e["type"] == "opportunity.found"]
    assert len(found) == len(set(found)) == 60
    assert final["opportunities_found"] == 60
    after = [code for sent, code in answers if sent >= back]
    assert after and all(code == 200 for code in after), sorted(set(after))
