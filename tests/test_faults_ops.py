"""Operations under faults: scan deadlines, job-stream trimming, pending entries whose body
was deleted, gone consumers, dead-letter re-drive, crash loops, graceful drain, and what
`scanstream inspect`, the worker's metrics and its logs show."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.reaper import Reaper
from consumers.runner import LOST_ATTEMPTS_FACTOR
from scanstream import events as ev
from scanstream.embedded import RedisProcess, free_port
from scanstream.errors import ConfigError
from scanstream.ids import new_scan_id
from scanstream.settings import Settings
from scanstream.storage.connection import Storage, client
from scanstream.storage.events import EventStore
from scanstream.storage.jobs import job_fields, job_id
from scanstream.storage.keys import JOB_GROUP
from scanstream.strategies.api import Strategy
from tests.support import strategies as ts
from tests.support.faults import (
    assert_log_is_sound,
    consumer_name,
    fault_settings,
    log_records,
    started_events,
    worker,
)
from tests.support.jobs import job_entries, pending_count, running_count
from tests.support.procs import REPO, Proc, env_for, running
from tests.support.scans import (
    start_scan,
    wait_for,
    wait_until_ended,
    workers_running,
)

pytestmark = pytest.mark.anyio

TEST_STRATEGIES = {s.name: s for s in (ts.noop, ts.finder, ts.slow, ts.sleeper, ts.poison)}


async def _pending(store: EventStore) -> int:
    return await pending_count(store.redis, store.keys)


# -- deadlines ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_scan_deadline_ends_scans_with_what_they_have(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a 2 s scan deadline, a scan with one finished and one endless strategy ends
    `completed` (reason deadline, the endless one cancelled and stopped), and a scan whose
    jobs were never queued ends `failed` (reason deadline): no worker needs to run it."""
    s = fault_settings(settings)
    w = worker(s, tmp_path, "a", SCANSTREAM_SCAN_DEADLINE="2")
    with running(w):
        await consumer_name(w)
        partial = await start_scan(store, ["finder", "sleeper"], {"slow_s": 60})
        orphan = await start_scan(store, ["finder"], enqueue=False)  # the API died in between
        partial_view = await wait_until_ended(store, partial, timeout_s=10)
        orphan_view = await wait_until_ended(store, orphan, timeout_s=10)
        await wait_for(lambda: _none_pending(store), 3, "the endless job to be stopped")
        await wait_for(lambda: _trimmed(store), 3, "the job stream to be trimmed")
        records = log_records(w)
    assert (partial_view.state, partial_view.end_reason) == ("completed", "deadline")
    assert partial_view.strategies["finder"].state == "completed"
    assert partial_view.strategies["sleeper"].state == "cancelled"
    assert len(partial_view.opportunities) == 3
    assert (orphan_view.state, orphan_view.end_reason) == ("failed", "deadline")
    assert orphan_view.strategies["finder"].state == "cancelled"
    for scan_id in (partial, orphan):
        assert_log_is_sound(await store.read(scan_id))
        assert await store.redis.ttl(store.keys.events(scan_id)) > 0  # retention started
    assert await running_count(store.redis, store.keys) == 0
    ended = [r for r in records if r["message"].startswith("scan ended at its deadline")]
    assert sorted(r["scan_id"] for r in ended) == sorted([partial, orphan])


async def _none_pending(store: EventStore) -> bool:
    return await _pending(store) == 0


async def _trimmed(store: EventStore) -> bool:
    return await job_entries(store.redis, store.keys) == 0


async def test_a_running_scan_never_expires_and_an_ended_one_does(
    storage: Storage, store: EventStore
) -> None:
    """Given a running scan, its keys have no TTL; once it ends, all of them get one."""
    scan_id = await start_scan(store, ["noop"])
    k = store.keys.scan(scan_id)
    assert await store.redis.ttl(k.events) == -1 and await store.redis.ttl(k.fence) == -1
    assert [r.scan_id for r in await storage.running.scans()] == [scan_id]
    status, terminal = await store.end_overdue_scan(scan_id)
    assert (status, terminal) == ("ok", "scan.failed")
    assert await store.redis.ttl(k.events) > 0 and await store.redis.ttl(k.fence) > 0
    assert await storage.running.scans() == []
    assert await store.end_overdue_scan(scan_id) == ("ended", "scan.failed")


def test_the_scan_deadline_must_be_positive() -> None:
    """SCANSTREAM_SCAN_DEADLINE=0 is refused at start-up, not read as "end at once"."""
    with pytest.raises(ConfigError):
        Settings.from_env({"SCANSTREAM_SCAN_DEADLINE": "0"})
    assert Settings.from_env({"SCANSTREAM_SCAN_DEADLINE": "90"}).scan_deadline_s == 90


# -- the job stream -----------------------------------------------------------------------


async def test_trimming_keeps_every_pending_and_undelivered_job(
    storage: Storage, store: EventStore
) -> None:
    """Given acknowledged, pending and undelivered jobs (in the last partition: trimming
    reaches every one), trimming drops only acknowledged ones below the oldest pending id,
    never a pending or undelivered one."""
    r, jobs = store.redis, store.keys.partitions[-1].jobs
    await storage.jobs.ensure_group()
    ids = [(await r.xadd(jobs, {"n": str(i)})).decode() for i in range(5)]
    await r.xreadgroup(JOB_GROUP, "c", {jobs: ">"}, count=4)  # 0..3 delivered, 4 not
    await r.xack(jobs, JOB_GROUP, ids[0], ids[2], ids[3])  # 1 stays pending
    assert await storage.upkeep.trim() == 1  # only 0: 2 and 3 are above the pending 1
    assert [i.decode() for i, _ in await r.xrange(jobs)] == ids[1:]
    await r.xack(jobs, JOB_GROUP, ids[1])
    assert await storage.upkeep.trim() == 3  # 1..3; 4 was never delivered
    assert [i.decode() for i, _ in await r.xrange(jobs)] == ids[4:]
    await r.xreadgroup(JOB_GROUP, "c", {jobs: ">"})
    assert await storage.upkeep.trim() == 0  # 4 is pending now
    assert await _pending(store) == 1


async def test_a_pending_job_whose_body_was_deleted_is_acknowledged_not_stuck(
    storage: Storage, store: EventStore
) -> None:
    """Given three jobs taken by a consumer that died, one deleted meanwhile, a reclaim
    runs the two others and acknowledges the deleted one (Redis 6.2 replies nil for it)."""
    r, scan_id = store.redis, "scan_" + "0" * 32
    partition = store.keys.partition_of(scan_id)
    await storage.jobs.ensure_group()
    for name in ("a", "b", "c"):
        await r.xadd(partition.jobs, job_fields(scan_id, name))
    taken = await r.xreadgroup(JOB_GROUP, "ghost", {partition.jobs: ">"}, count=3)
    first = taken[0][1][0][0].decode()
    await r.xdel(partition.jobs, first)
    claimed, deleted = await storage.claims("heir").reclaim(min_idle_ms=0, count=10)
    assert deleted == [job_id(partition.index, first)]
    assert [j.strategy for j in claimed] == ["b", "c"]
    assert all(j.deliveries == 2 for j in claimed)
    rows = await r.xpending_range(partition.jobs, JOB_GROUP, "-", "+", 10)
    assert [(x["consumer"], x["times_delivered"]) for x in rows] == [(b"heir", 2), (b"heir", 2)]


async def test_only_consumers_without_pending_jobs_are_removed(
    storage: Storage, store: EventStore
) -> None:
    """Given a gone consumer owning a job and one owning none, pruning removes only the
    second, and the first's job can still be reclaimed."""
    r, scan_id = store.redis, "scan_" + "0" * 32
    jobs = store.keys.jobs_of("alice").jobs
    await storage.jobs.ensure_group()
    await r.xadd(jobs, job_fields(scan_id, "a"))
    await r.xreadgroup(JOB_GROUP, "owner", {jobs: ">"})
    await r.xgroup_createconsumer(jobs, JOB_GROUP, "idle")
    assert await storage.upkeep.prune_consumers(min_idle_ms=0) == ["idle"]
    assert [c["name"] for c in await r.xinfo_consumers(jobs, JOB_GROUP)] == [b"owner"]
    claimed, _ = await storage.claims("heir").reclaim(min_idle_ms=0, count=10)
    assert [j.strategy for j in claimed] == ["a"]
    assert await storage.upkeep.prune_consumers(min_idle_ms=60_000) == []


async def test_an_ended_scan_leaves_the_running_set_by_the_next_sweep(
    settings: Settings, storage: Storage, store: EventStore
) -> None:
    """Given ended scans still in the running set (the removal after their end was lost),
    a stale entry with no scan behind it, a just-created one and a running scan, one
    reaper round removes the ended and the stale ones and keeps the other two."""
    ended = [await start_scan(store, ["noop"], enqueue=False) for _ in range(3)]
    for scan_id in ended:
        assert (await store.end_scan(scan_id, "scan.cancelled"))[0] == "ok"
    running = await start_scan(store, ["noop"], enqueue=False)
    stale, young = new_scan_id(), new_scan_id()
    hour_ago = ev.wall_ms() - 3_600_000
    for scan_id, created_ms in {
        **dict.fromkeys(ended, hour_ago),
        stale: hour_ago,
        young: ev.wall_ms(),
    }.items():
        await store.redis.zadd(store.keys.partition_of(scan_id).running, {scan_id: created_ms})
    reaper = Reaper(storage, settings, "r")
    report = await reaper.sweep()
    left = {r.scan_id for r in await storage.running.scans()}
    assert left == {running, young}
    assert report.forgotten == 4 and report.ended == []


async def test_one_reaper_round_per_interval_across_workers(
    settings: Settings, storage: Storage
) -> None:
    """Given two reapers, only one of them takes a round's lock."""
    a = Reaper(storage, settings.with_(reap_interval_s=5), "a")
    b = Reaper(storage, settings.with_(reap_interval_s=5), "b")
    assert [await a._take_round(), await b._take_round()] == [True, False]


# -- retries, crash loops, dead letters ---------------------------------------------------


async def test_a_job_whose_attempts_all_died_is_failed_for_good(
    settings: Settings, storage: Storage, store: EventStore
) -> None:
    """Given a strategy whose attempts all started and never finished (their workers died),
    up to twice max_attempts, the next delivery fails it for good without running it,
    dead-letters it, and the scan ends."""
    cap = LOST_ATTEMPTS_FACTOR * settings.max_attempts
    scan_id = await start_scan(store, ["finder"])
    for i in range(cap):
        assert (await store.start_strategy(scan_id, "finder", f"dead-{i}")).ok
    async with workers_running(settings, TEST_STRATEGIES):
        view = await wait_until_ended(store, scan_id)
    assert view.state == "failed"
    error = view.strategies["finder"].error
    assert error is not None and error.type == "WorkerLost"
    assert not view.opportunities
    [letter] = await storage.dead_letters.newest()
    assert (letter.strategy, letter.attempts, letter.error_type) == (
        "finder",
        cap + 1,
        "WorkerLost",
    )


async def test_redrive_requeues_only_work_that_can_still_count(
    settings: Settings, storage: Storage, store: EventStore
) -> None:
    """Given dead letters for an open strategy of a running scan, for a finished strategy,
    and for an ended scan, a re-drive queues the first (which then runs) and refuses the
    others, saying why; an unknown id is reported."""
    open_scan = await start_scan(store, ["finder", "noop"], enqueue=False)
    attempt = (await store.start_strategy(open_scan, "noop", "w")).attempt
    await store.finish_strategy(
        open_scan,
        "noop",
        attempt,
        [
            ev.stamp(
                ev.StrategyCompleted,
                strategy="noop",
                attempt=attempt,
                opportunities=0,
                duration_ms=1,
            )
        ],
    )
    ended_scan = await start_scan(store, ["finder"], enqueue=False)
    await store.end_scan(ended_scan, "scan.cancelled")
    letters = []
    for scan_id, strategy in ((open_scan, "finder"), (open_scan, "noop"), (ended_scan, "finder")):
        letters.append(
            await storage.dead_letters.add(
                {
                    "job_id": "0-1",
                    "scan_id": scan_id,
                    "strategy": strategy,
                    "attempts": 3,
                    "error_type": "RuntimeError",
                    "error": "boom",
                    "worker": "w",
                    "ts": ev.now_rfc3339(),
                },
            )
        )
    unknown = [job_id(0, "1-1"), "1-1"]  # no such letter; no such partition either
    results = await storage.dead_letters.redrive(store, [*letters, *unknown])
    assert [x.outcome for x in results] == ["requeued", "refused", "refused", "unknown", "unknown"]
    assert "already completed" in results[1].detail and "ended" in results[2].detail
    # (in any order: two letters of one millisecond in two partitions have none between them)
    assert sorted(d.id for d in await storage.dead_letters.newest()) == sorted(letters[1:])
    async with workers_running(settings, TEST_STRATEGIES):
        view = await wait_until_ended(store, open_scan)
    assert view.state == "completed" and len(view.opportunities) == 3
    again = await storage.dead_letters.redrive(store, [letters[0]])
    assert [x.outcome for x in again] == ["unknown"]  # never re-driven twice


async def test_a_worker_that_lost_its_job_during_backoff_starts_no_new_attempt(
    settings: Settings, store: EventStore
) -> None:
    """Given a failed attempt waiting out its retry backoff, when another consumer takes the
    job meanwhile (as after a freeze), the worker starts no attempt 2 and leaves the job to
    its new owner."""
    slow_heartbeat = settings.with_(retry_backoff_s=0.6, claim_idle_ms=20_000, heartbeat_ms=10_000)
    scan_id = await start_scan(store, ["poison"])
    jobs = store.keys.jobs_of("alice").jobs
    async with workers_running(slow_heartbeat, TEST_STRATEGIES):
        await wait_for(lambda: _failed_once(store, scan_id), 5, "attempt 1 to fail")
        [row] = await store.redis.xpending_range(jobs, JOB_GROUP, "-", "+", 1)
        await store.redis.xclaim(jobs, JOB_GROUP, "thief", 0, [row["message_id"]])
        await anyio.sleep(1.2)  # the backoff is over: the worker asked and let go
    entries = await store.read(scan_id)
    assert [st.attempt for _, st in started_events(entries)] == [1]
    [row] = await store.redis.xpending_range(jobs, JOB_GROUP, "-", "+", 1)
    assert row["consumer"] == b"thief"


async def _failed_once(store: EventStore, scan_id: str) -> bool:
    return any(isinstance(e.event, ev.StrategyFailed) for e in await store.read(scan_id))


async def test_time_limits_fail_a_strategy_for_good(
    settings: Settings, storage: Storage, store: EventStore
) -> None:
    """Given the default limit (SCANSTREAM_STRATEGY_TIMEOUT) and a strategy's own, an attempt
    running past its limit fails for good (`Timeout`), is dead-lettered, and the scan ends."""
    own = Strategy("quick_limit", "sleeps past its own 0.2 s limit", ts.sleeper.run, timeout_s=0.2)
    strategies = {**TEST_STRATEGIES, own.name: own}
    scan_id = await start_scan(store, ["sleeper", "quick_limit"], {"slow_s": 5})
    async with workers_running(settings.with_(strategy_timeout_s=0.4), strategies):
        view = await wait_until_ended(store, scan_id, timeout_s=5)
    assert view.state == "failed"
    for name, limit in (("sleeper", "0.4s"), ("quick_limit", "0.2s")):
        strategy = view.strategies[name]
        assert strategy.state == "failed" and strategy.attempts == 1
        assert strategy.error is not None and strategy.error.type == "Timeout"
        assert limit in strategy.error.message
    letters = await storage.dead_letters.newest()
    assert sorted(d.strategy for d in letters) == ["quick_limit", "sleeper"]


async def test_a_job_for_a_strategy_the_scan_does_not_have_changes_nothing(
    settings: Settings, storage: Storage, store: EventStore
) -> None:
    """Given a hand-written job naming a strategy that is not part of the scan, it is
    acknowledged without a write, cannot end the scan early, and cannot be re-driven."""
    scan_id = await start_scan(store, ["finder"], enqueue=False)
    await storage.jobs.ensure_group()
    jobs = store.keys.jobs_of("alice").jobs
    await store.redis.xadd(jobs, job_fields(scan_id, "noop"))
    assert (await store.start_strategy(scan_id, "noop", "w")).status == "missing"
    letter = await storage.dead_letters.add({"scan_id": scan_id, "strategy": "noop", "attempts": 1})
    [refused] = await storage.dead_letters.redrive(store, [letter])
    assert (refused.outcome, refused.detail) == ("refused", "the scan has no such strategy")
    async with workers_running(settings, TEST_STRATEGIES):
        await wait_for(lambda: _none_pending(store), 5, "the foreign job to be acknowledged")
        assert [e.type for e in await store.read(scan_id)] == ["scan.requested"]
        await store.redis.xadd(jobs, job_fields(scan_id, "finder"))
        view = await wait_until_ended(store, scan_id)
    assert view.state == "completed" and view.warnings_count == 0


# -- graceful drain -----------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_leaves_unfinished_jobs_to_be_reclaimed(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a worker with a short grace running a slow strategy, on SIGTERM it exits,
    leaving the job pending, and another worker takes it over as attempt 2."""
    s = fault_settings(settings)
    a = worker(s, tmp_path, "a", grace_s=0.3)
    with running(a):
        await consumer_name(a)
        scan_id = await start_scan(store, ["steady_a"], {"slow_s": 2})
        await wait_for(lambda: _started(store, scan_id, 1), 10, "attempt 1 to start")
        a.signal(signal.SIGTERM)
        assert a.process is not None
        await anyio.to_thread.run_sync(a.process.wait, 5)
        assert a.process.returncode == 0
        assert await _pending(store) == 1
        b = worker(s, tmp_path, "b")
        with running(b):
            view = await wait_until_ended(store, scan_id, timeout_s=15)
    assert view.state == "completed" and view.strategies["steady_a"].attempts == 2
    assert any(r["message"].startswith("signal received: draining") for r in log_records(a))


async def _started(store: EventStore, scan_id: str, n: int) -> bool:
    return len(started_events(await store.read(scan_id))) >= n


# -- inspect, metrics, logs ---------------------------------------------------------------


@pytest.mark.slow
async def test_inspect_metrics_and_logs_show_what_workers_do(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a worker with --metrics-port that ran a scan with a retried strategy and a job
    held by a dead consumer, `inspect` shows the group, pending job, dead letter and
    running scan; /metrics counts jobs, retries and dead letters; logs carry scan id,
    strategy and attempt."""
    s = fault_settings(settings, claim_idle_ms=30_000, heartbeat_ms=1_000)  # ghost's job stays
    env = env_for(s, SCANSTREAM_LOG_FORMAT="json", SCANSTREAM_LOG_LEVEL="debug")
    port = free_port()
    w = Proc(
        ["worker", "--concurrency", "4", "--metrics-port", str(port)],
        env,
        tmp_path / "metrics-worker.log",
    )
    with running(w):
        await consumer_name(w)
        scan_id = await start_scan(store, ["poison", "finder"])
        await wait_until_ended(store, scan_id, timeout_s=15)
        stuck = await start_scan(store, ["noop"], enqueue=False)
        jobs = store.keys.jobs_of("alice").jobs
        pipe = store.redis.pipeline(transaction=True)  # atomic: the worker cannot take it
        pipe.xadd(jobs, job_fields(stuck, "noop"))
        pipe.xreadgroup(JOB_GROUP, "ghost", {jobs: ">"})  # then "ghost" dies
        await pipe.execute()
        overview = json.loads(_inspect(env, "--json").stdout)
        text = _inspect(env)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        records = log_records(w)
        await store.end_scan(stuck, "scan.cancelled")
    groups = overview["job_stream"]["groups"]  # one per partition
    assert sorted(g["partition"] for g in groups) == list(range(s.job_partitions))
    assert all(g["name"] == JOB_GROUP and g["lag"] == 0 for g in groups)
    assert {g["partition"]: g["pending"] for g in groups if g["pending"]} == {
        store.keys.jobs_of("alice").index: 1
    }
    assert [(p["consumer"], p["scan_id"]) for p in overview["pending"]] == [("ghost", stuck)]
    assert overview["dead_letters"]["count"] == 1
    assert [r["scan_id"] for r in overview["running_scans"]] == [stuck]
    assert text.returncode == 0 and "pending jobs" in text.stdout and "ghost" in text.stdout
    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(metrics)
        for x in family.samples
    }
    assert samples[("scanstream_worker_jobs_total", (("outcome", "completed"),))] == 1
    assert samples[("scanstream_worker_jobs_total", (("outcome", "failed"),))] == 1
    assert samples[("scanstream_worker_retries_total", (("strategy", "poison"),))] == 2
    assert samples[("scanstream_worker_dead_letters_total", (("strategy", "poison"),))] == 1
    assert (
        samples[
            (
                "scanstream_worker_strategy_duration_seconds_count",
                (("outcome", "completed"), ("strategy", "finder")),
            )
        ]
        == 1
    )
    started = [r for r in records if r["message"] == "strategy started"]
    assert {(r["scan_id"], r["strategy"], r["attempt"]) for r in started} == {
        (scan_id, "finder", 1),
        (scan_id, "poison", 1),
        (scan_id, "poison", 2),
        (scan_id, "poison", 3),
    }


def _inspect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanstream", "inspect", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_a_worker_warns_when_redis_may_evict_finished_scans(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a Redis whose maxmemory-policy is not noeviction, a starting worker warns."""
    server = RedisProcess(data_dir=tmp_path / "lru").start()
    try:
        r = client(server.url)
        await r.config_set("maxmemory-policy", "allkeys-lru")
        await r.aclose()
        async with workers_running(settings.with_(redis_url=server.url), TEST_STRATEGIES):
            pass
    finally:
        server.kill()
    assert any("maxmemory-policy is 'allkeys-lru'" in m for m in caplog.messages)


def test_inspect_without_redis_says_so(tmp_path: Path) -> None:
    """With no SCANSTREAM_REDIS_URL, `inspect` explains and exits 2."""
    env = {k: v for k, v in env_for(Settings()).items() if k != "SCANSTREAM_REDIS_URL"}
    done = _inspect(env, "groups")
    assert done.returncode == 2 and "SCANSTREAM_REDIS_URL" in done.stderr
