"""`GET /v1/scans/{id}/results?wait=S` under load, on a real `scanstream api` process and a
real Redis: long-polls ride the fan-out's tail reader, so hundreds of them cost a few Redis
connections, never a 503 on a healthy Redis, and past the caps a 429."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream.live.fanout import READ_SLOTS
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.support import api_events as scans
from tests.support.api_events import auth
from tests.support.procs import Proc, api_proc, running
from tests.support.sockets import redis_connections_of
from tests.support.sse import create_scan, metric, wait_for_metric

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WAIT_S = 10  # every long-poll here waits this long at most


@contextmanager
def api(settings: Settings, tmp_path: Path, **env: str) -> Iterator[Proc]:
    with running(api_proc(settings, tmp_path, **env)) as (proc,):
        yield proc


@asynccontextmanager
async def http(proc: Proc) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=proc.url, timeout=30.0, limits=limits) as client:
        yield client


async def running_scan(client: httpx.AsyncClient, store: EventStore) -> tuple[str, int]:
    """A scan of one strategy that has started and stays running until `finish`."""
    scan_id = await create_scan(client, ["slow"])
    attempt = await scans.start(store, scan_id, "slow")
    await scans.progress(store, scan_id, "slow", attempt, 0.5, [("AAA", 0.7)])
    return scan_id, attempt


async def finish(store: EventStore, scan_id: str, attempt: int) -> None:
    assert await scans.complete(store, scan_id, "slow", attempt, 1) == "scan.completed"


async def long_polls(
    client: httpx.AsyncClient, scan_id: str, users: list[str], out: list[httpx.Response]
) -> None:
    """One `results?wait=` per entry of `users`, all at once; the answers go to `out`."""

    async def one(user: str) -> None:
        url = f"/v1/scans/{scan_id}/results"
        out.append(await client.get(url, params={"wait": WAIT_S}, headers=auth(user)))

    async with anyio.create_task_group() as tg:
        for user in users:
            tg.start_soon(one, user)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_300_long_polls_of_one_user_are_answered_200_or_429_never_503(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """With the default caps, 300 concurrent long-polls of one user on a healthy Redis: 100
    wait (the per-user cap) and the rest are 429 at once; no 503, no store error; when the
    scan ends every waiter answers 200 with the complete results promptly."""
    with api(settings, tmp_path) as proc:
        async with http(proc) as client:
            scan_id, attempt = await running_scan(client, store)
            answers: list[httpx.Response] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_polls, client, scan_id, ["alice"] * 300, answers)
                await wait_for_metric(client, "scanstream_results_waiting", 100, timeout_s=15)
                await wait_for_metric(client, "scanstream_results_wait_rejected_total", 200)
                assert len(answers) == 200  # the 429s came at once
                ended = time.monotonic()
                await finish(store, scan_id, attempt)
            took = time.monotonic() - ended
            store_errors = await metric(client, "scanstream_store_errors_total")
    by_status = Counter(r.status_code for r in answers)
    assert by_status == {200: 100, 429: 200}, by_status
    for r in answers:
        if r.status_code == 429:
            assert_rate_limited(r)
        else:
            body = r.json()
            assert body["complete"] is True and body["state"] == "completed"
            assert [o["symbol"] for o in body["opportunities"]] == ["AAA"]
    assert took < 2.0, f"the waiters answered {took:.2f}s after the scan ended"
    assert store_errors == 0


async def test_hundreds_of_long_polls_hold_a_few_redis_connections(
    settings: Settings, store: EventStore, redis: object, tmp_path: Path
) -> None:
    """20 or 320 long-polls waiting on one API process hold a small constant number of Redis
    connections: the tail reader's, and at most one pooled one per read slot (the reads of
    a burst of long-polls queue for the slots, not for new connections)."""
    with api(settings, tmp_path, SCANSTREAM_WAIT_MAX_PER_USER="1000") as proc:
        assert proc.process is not None
        async with http(proc) as client:
            scan_id, attempt = await running_scan(client, store)
            counts: dict[int, int] = {}
            answers: list[httpx.Response] = []
            async with anyio.create_task_group() as tg:
                for more, waiting in ((20, 20), (300, 320)):
                    tg.start_soon(long_polls, client, scan_id, ["alice"] * more, answers)
                    await wait_for_metric(client, "scanstream_results_waiting", waiting, 15)
                    counts[waiting] = await redis_connections_of(redis, proc.process.pid)
                await finish(store, scan_id, attempt)
    assert Counter(r.status_code for r in answers) == {200: 320}
    assert all(r.json()["complete"] for r in answers)
    assert max(counts.values()) <= READ_SLOTS + 2, counts


async def test_past_the_caps_long_polls_are_429_with_retry_after(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """With caps of 40 per user and 60 per process, 100 long-polls of alice and 50 of bob:
    60 wait (at most 40 of one user), the other 90 are 429 with Retry-After."""
    caps = {"SCANSTREAM_WAIT_MAX_PER_USER": "40", "SCANSTREAM_WAIT_MAX": "60"}
    with api(settings, tmp_path, **caps) as proc:
        async with http(proc) as client:
            alice_scan, alice_attempt = await running_scan(client, store)
            bob_scan = await create_scan(client, ["slow"], user="bob")
            bob_attempt = await scans.start(store, bob_scan, "slow")
            answers: dict[str, list[httpx.Response]] = {"alice": [], "bob": []}
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_polls, client, alice_scan, ["alice"] * 100, answers["alice"])
                tg.start_soon(long_polls, client, bob_scan, ["bob"] * 50, answers["bob"])
                await wait_for_metric(client, "scanstream_results_waiting", 60, timeout_s=15)
                await wait_for_metric(client, "scanstream_results_wait_rejected_total", 90)
                await finish(store, alice_scan, alice_attempt)
                await scans.complete(store, bob_scan, "slow", bob_attempt, 0)
    admitted = {user: sum(r.status_code == 200 for r in rs) for user, rs in answers.items()}
    assert sum(admitted.values()) == 60 and max(admitted.values()) <= 40, admitted
    for rs in answers.values():
        for r in rs:
            if r.status_code != 200:
                assert_rate_limited(r)
