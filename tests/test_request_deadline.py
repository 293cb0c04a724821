"""A frozen Redis (SIGSTOP: a long fork stall, a partition) under the request deadline.

Each test freezes a redis-server of its own, never the session's, and always thaws it
(SIGCONT) in a `finally`."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream.deadline import Deadline
from scanstream.embedded import RedisProcess
from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from tests.support import api_events as scans
from tests.support.api_events import auth
from tests.support.procs import api_proc, running
from tests.support.sse import create_scan, metric

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEFAULT_DEADLINE_S = Settings().request_timeout_s
FREEZE_S = 4.0  # long enough for the tail reader's read (0.2 s + the deadline) to time out


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of this test's own: it is the one frozen."""
    server = RedisProcess(data_dir=tmp_path / "redis").start()
    yield server
    server.kill()


@contextmanager
def frozen(server: RedisProcess) -> Iterator[None]:
    """Redis stopped (SIGSTOP) for the block, thawed whatever happens."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def test_a_cancelled_command_never_leaves_its_reply_for_the_next_one(
    own_redis: RedisProcess,
) -> None:
    """A command cut off by the deadline while Redis is frozen (reply not read), or while a
    large reply is half read, drops its connection: after the thaw, the next command on
    the one pooled connection gets its own reply, not the late one."""
    redis = client(own_redis.url, max_connections=1)
    deadline = Deadline(0.3)
    try:
        await redis.mset({"a": "A", "b": "B", "big": b"x" * 20_000_000})
        with frozen(own_redis), pytest.raises(StoreUnavailable, match="did not answer"), deadline():
            await redis.get("a")
        assert await redis.get("b") == b"B"
        cut = 0
        for ms in range(1, 21):  # cut off somewhere in a 20 MB reply (the same cancellation)
            try:
                async with asyncio.timeout(ms / 1000):
                    await redis.get("big")
            except TimeoutError:
                cut += 1
            assert await redis.get("b") == b"B"
        assert cut > 0
        await redis.connection_pool.disconnect()
        with frozen(own_redis), pytest.raises(StoreUnavailable), deadline():
            await redis.get("a")  # cut off in the connection's handshake
        assert await redis.get("a") == b"A"
    finally:
        await redis.aclose()


async def test_a_frozen_redis_is_503_within_the_deadline_and_recovers(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """With the default deadline, while Redis is frozen: status, results, a long-poll, the
    SSE stream and /readyz each answer 503 store_unavailable with Retry-After within 3 s.
    After the thaw everything is 200 again within 5 s, and a long-poll waiting since before
    the freeze is answered when the scan ends: the tail reader, cut off, reconnected."""
    assert DEFAULT_DEADLINE_S == 2.0
    s = settings.with_(redis_url=own_redis.url)
    redis = client(own_redis.url)
    store = EventStore(redis, Keys(s.prefix, s.job_partitions), retention_s=s.retention_s)
    paths = {
        "status": "/v1/scans/{id}",
        "results": "/v1/scans/{id}/results",
        "long-poll": "/v1/scans/{id}/results?wait=0.5",
        "events": "/v1/scans/{id}/events",
        "readyz": "/readyz",
    }
    try:
        with running(api_proc(s, tmp_path)) as (proc,):
            async with httpx.AsyncClient(
                base_url=proc.url, headers=auth("alice"), timeout=20.0
            ) as api:
                scan_id = await create_scan(api, ["slow"])
                attempt = await scans.start(store, scan_id, "slow")
                urls = {name: p.format(id=scan_id) for name, p in paths.items()}
                for url in urls.values():
                    assert await status_of(api, url) == 200, url
                waited: list[httpx.Response] = []

                async def wait_through_the_freeze() -> None:
                    url = urls["results"]
                    waited.append(await api.get(url, params={"wait": 30}))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_through_the_freeze)
                    await anyio.sleep(0.3)
                    with frozen(own_redis):
                        answers = await timed_gets(api, urls)
                        await anyio.sleep(FREEZE_S - 2.0)  # the tail reader's read times out
                    healthy_after = await until_all_200(api, urls, timeout_s=5.0)
                    await scans.complete(store, scan_id, "slow", attempt, 0)
                tail_errors = await metric(api, "scanstream_sse_tail_read_errors_total")
    finally:
        await redis.aclose()
    for name, (response, took) in answers.items():
        assert response.status_code == 503, (name, response.text)
        assert response.json()["error"] == "store_unavailable", name
        assert response.json()["detail"], name
        assert int(response.headers["retry-after"]) >= 1, name
        assert took < 3.0, f"{name} took {took:.2f}s"
    assert healthy_after < 5.0
    assert tail_errors >= 1  # it was cut off, reconnected, and delivered the end below
    assert [r.status_code for r in waited] == [200]
    assert waited[0].json()["complete"] is True


async def test_a_scan_created_as_redis_freezes_is_whole_once_it_thaws(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """`POST /v1/scans` while Redis is frozen is a 503 within 3 s. After the thaw, the scan
    whose creation was under way has its job queued and is listed (its two writes finish
    together), and a retry with the same Idempotency-Key gets a scan that runs: one job
    per scan, none lost, none twice."""
    s = settings.with_(redis_url=own_redis.url)
    redis = client(own_redis.url)
    keys = Keys(s.prefix, s.job_partitions)
    body = {"strategies": ["noop"]}
    try:
        with running(api_proc(s, tmp_path)) as (proc,):
            async with httpx.AsyncClient(
                base_url=proc.url, headers=auth("alice"), timeout=20.0
            ) as api:
                await create_scan(api, ["noop"])  # the job group and pool are warm
                with frozen(own_redis):
                    started = time.monotonic()
                    async with anyio.create_task_group() as tg:
                        answers: list[httpx.Response] = []

                        async def post(headers: dict[str, str]) -> None:
                            answers.append(await api.post("/v1/scans", json=body, headers=headers))

                        tg.start_soon(post, {})
                        tg.start_soon(post, {"Idempotency-Key": "k1"})
                    took = time.monotonic() - started
                retry = await api.post("/v1/scans", json=body, headers={"Idempotency-Key": "k1"})
                await anyio.sleep(0.5)  # the unkeyed creation finishes in the background
                listed = (await api.get("/v1/scans")).json()["scans"]
            queued = [
                (p.index, fields[b"scan_id"].decode())
                for p in keys.partitions
                for _, fields in await redis.xrange(p.jobs)
            ]
    finally:
        await redis.aclose()
    assert [r.status_code for r in answers] == [503, 503]
    assert all(r.json()["error"] == "store_unavailable" for r in answers)
    assert took < 3.0
    assert retry.status_code == 202, retry.text
    assert len(listed) == 3  # the warm-up scan, the unkeyed one, the keyed one
    jobs = [scan_id for _, scan_id in queued]
    assert sorted(jobs) == sorted(scan["scan_id"] for scan in listed)
    assert all(keys.jobs_of("alice").index == i for i, _ in queued)  # the user's partition
    assert retry.json()["scan_id"] in jobs


async def status_of(api: httpx.AsyncClient, url: str) -> int:
    """The answer's status, without reading the body (an SSE stream's never ends)."""
    async with api.stream("GET", url) as response:
        return response.status_code


async def timed_gets(
    api: httpx.AsyncClient, urls: dict[str, str]
) -> dict[str, tuple[httpx.Response, float]]:
    """Every URL at once; each answer with the seconds it took."""
    out: dict[str, tuple[httpx.Response, float]] = {}

    async def one(name: str, url: str) -> None:
        started = time.monotonic()
        response = await api.get(url)
        out[name] = (response, time.monotonic() - started)

    async with anyio.create_task_group() as tg:
        for name, url in urls.items():
            tg.start_soon(one, name, url)
    return out


async def until_all_200(api: httpx.AsyncClient, urls: dict[str, str], timeout_s: float) -> float:
    """Seconds until every URL answers 200 (asked again every 0.1 s)."""
    started = time.monotonic()
    while True:
        statuses = [await status_of(api, url) for url in urls.values()]
        if all(status == 200 for status in statuses):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"still {statuses} after {timeout_s}s")
        await anyio.sleep(0.1)
