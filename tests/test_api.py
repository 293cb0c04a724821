"""The HTTP API over a real socket: a real uvicorn server, real Redis, events written
through the store where a worker would write them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from scanstream.api import create_app
from scanstream.events import TERMINAL_TYPES
from scanstream.ids import new_scan_id
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from scanstream.storage.index import digest
from scanstream.storage.keys import Keys
from tests.support import api_events as scans
from tests.support.api_events import auth
from tests.support.http import serve
from tests.support.jobs import job_entries

pytestmark = pytest.mark.anyio

CONTRACT_PATHS = {
    "/v1/scans": {"get", "post"},
    "/v1/scans/{scan_id}": {"get"},
    "/v1/scans/{scan_id}/results": {"get"},
    "/v1/scans/{scan_id}/events": {"get"},
    "/v1/scans/{scan_id}/log": {"get"},
    "/v1/scans/{scan_id}/cancel": {"post"},
    "/v1/scans/{scan_id}/stream-token": {"post"},
    "/v1/strategies": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/": {"get"},
}


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, headers=auth("alice"), timeout=30) as c:
        yield c


async def create(client: httpx.AsyncClient, body: Any = None, **kw: Any) -> dict[str, Any]:
    body = {"strategies": ["noop", "finder"]} if body is None else body
    response = await client.post("/v1/scans", json=body, **kw)
    assert response.status_code == 202, response.text
    return response.json()


async def xrange(redis: Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(key))


async def get_json(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- create and status -----------------------------------------------------------------


async def test_create_answers_202_with_location_and_queued_status(
    client: httpx.AsyncClient,
) -> None:
    """POST /v1/scans answers 202, a Location of the scan, and its status: queued."""
    response = await client.post("/v1/scans", json={"strategies": ["noop", "finder"]})
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/v1/scans/{body['scan_id']}"
    assert body["state"] == "queued"
    assert body["user_id"] == "alice"
    assert [s["name"] for s in body["strategies"]] == ["noop", "finder"]
    assert all(s["state"] == "pending" for s in body["strategies"])
    assert body["progress"] == 0 and body["finished_at"] is None


async def test_create_queues_one_job_per_strategy(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """Creating a scan queues exactly one job per strategy on the job stream of the
    user's partition, and nothing on the others."""
    scan = await create(client)
    keys = Keys(settings.prefix, settings.job_partitions)
    jobs = await xrange(redis, keys.jobs_of("alice").jobs)
    assert sorted(f[b"strategy"] for _, f in jobs) == [b"finder", b"noop"]
    assert {f[b"scan_id"].decode() for _, f in jobs} == {scan["scan_id"]}
    assert await job_entries(redis, keys) == 2


async def test_pair_strategies_are_queued_first(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """A scan's pair strategy (its work grows with the square of the universe) is queued
    ahead of its series strategies, which keep the order asked for; the scan itself lists
    them as asked."""
    asked = ["momentum", "noop", "pairs_spread", "finder"]
    scan = await create(client, {"strategies": asked})
    keys = Keys(settings.prefix, settings.job_partitions)
    jobs = await xrange(redis, keys.jobs_of("alice").jobs)
    assert [f[b"strategy"].decode() for _, f in jobs] == [
        "pairs_spread",
        "momentum",
        "noop",
        "finder",
    ]
    assert [s["name"] for s in scan["strategies"]] == asked


async def test_missing_or_null_strategies_means_every_strategy(client: httpx.AsyncClient) -> None:
    """A body without strategies (or null, or no body at all) runs every available strategy."""
    everything = [s["name"] for s in (await get_json(client, "/v1/strategies"))["strategies"]]
    for body in ({}, {"strategies": None}):
        scan = await create(client, body)
        assert [s["name"] for s in scan["strategies"]] == everything
    response = await client.post("/v1/scans")
    assert response.status_code == 202
    assert response.json()["strategies_total"] == len(everything)


async def test_params_are_stored_as_given(client: httpx.AsyncClient) -> None:
    """Valid params are kept exactly as sent in scan.requested (not as parsed)."""
    scan = await create(client, {"strategies": ["finder"], "params": {"bars": 60, "finds": 2}})
    log = await get_json(client, f"/v1/scans/{scan['scan_id']}/log")
    assert log["events"][0]["params"] == {"bars": 60, "finds": 2}


async def test_status_follows_the_log_to_completion(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    """Status shows a strategy's progress while it runs, then the completed scan."""
    sid = (await create(client))["scan_id"]
    attempt = await scans.start(store, sid, "finder")
    await scans.progress(store, sid, "finder", attempt, 0.5, [("AAA", 0.2), ("BBB", 0.9)])
    running = await get_json(client, f"/v1/scans/{sid}")
    assert running["state"] == "running"
    assert running["progress"] == 0.25
    assert running["opportunities_found"] == 2
    finder = next(s for s in running["strategies"] if s["name"] == "finder")
    assert (finder["state"], finder["attempts"], finder["progress"]) == ("running", 1, 0.5)

    await scans.run(store, sid, "noop")
    assert await scans.complete(store, sid, "finder", attempt, 2) == "scan.completed"
    done = await get_json(client, f"/v1/scans/{sid}")
    assert done["state"] == "completed"
    assert done["progress"] == 1.0 and done["finished_at"] is not None
    assert done["strategies_completed"] == 2 and done["strategies_failed"] == 0
    results = await get_json(client, f"/v1/scans/{sid}/results")
    assert results["complete"] is True and results["state"] == "completed"
    assert [o["symbol"] for o in results["opportunities"]] == ["BBB", "AAA"]
    assert results["last_event_id"] == done["last_event_id"]


async def test_results_are_partial_while_running(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    """Results list what was found so far, best score first, with complete false."""
    sid = (await create(client))["scan_id"]
    attempt = await scans.start(store, sid, "finder")
    await scans.progress(
        store, sid, "finder", attempt, 0.3, [("LOW", 0.1), ("TOP", 0.95), ("MID", 0.5)]
    )
    results = await get_json(client, f"/v1/scans/{sid}/results")
    assert results["complete"] is False and results["state"] == "running"
    assert [o["symbol"] for o in results["opportunities"]] == ["TOP", "MID", "LOW"]


async def test_results_wait_returns_as_soon_as_the_scan_ends(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    """?wait= holds the answer only until the terminal event is written."""
    sid = (await create(client, {"strategies": ["finder"]}))["scan_id"]

    async def finish_later() -> None:
        await anyio.sleep(0.6)
        await scans.run(store, sid, "finder", [("AAA", 0.7)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_later)
        started = time.monotonic()
        results = await get_json(client, f"/v1/scans/{sid}/results", wait=20)
        elapsed = time.monotonic() - started
    assert results["complete"] is True
    assert [o["symbol"] for o in results["opportunities"]] == ["AAA"]
    assert 0.5 < elapsed < 5


async def test_results_wait_returns_partial_after_the_timeout(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    """?wait=S on a scan that does not end answers the partial results after about S seconds."""
    sid = (await create(client))["scan_id"]
    attempt = await scans.start(store, sid, "finder")
    await scans.progress(store, sid, "finder", attempt, 0.5, [("AAA", 0.4)])
    started = time.monotonic()
    results = await get_json(client, f"/v1/scans/{sid}/results", wait=1.2)
    elapsed = time.monotonic() - started
    assert results["complete"] is False and len(results["opportunities"]) == 1
    assert 1.1 < elapsed < 4


# -- log -------------------------------------------------------------------------------


async def test_log_pages_with_after_limit_and_next(
    client: httpx.AsyncClient, store: EventStore, redis: Redis, settings: Settings
) -> None:
    """The log pages through every entry in stream order; next is null on the last page."""
    sid = (await create(client, {"strategies": ["finder"]}))["scan_id"]
    await scans.run(store, sid, "finder", [("A", 0.1), ("B", 0.2), ("C", 0.3)])
    stream_ids = [i.decode() for i, _ in await xrange(redis, Keys(settings.prefix).events(sid))]

    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"after": after} if after else {})
        page = await get_json(client, f"/v1/scans/{sid}/log", **params)
        pages += 1
        seen += page["events"]
        if page["next"] is None:
            break
        assert page["next"] == page["events"][-1]["id"]
        after = page["next"]
    assert [e["id"] for e in seen] == stream_ids
    assert pages == -(-len(stream_ids) // 3)
    assert seen[0]["type"] == "scan.requested" and seen[-1]["type"] in TERMINAL_TYPES
    assert all(e["scan_id"] == sid and "event_id" in e and e["v"] == 1 for e in seen)
    opportunity = next(e for e in seen if e["type"] == "opportunity.found")
    assert opportunity["opportunity"]["symbol"] == "A"


async def test_log_shows_unreadable_entries_with_their_problem(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """A hostile entry appears in the log as raw data with a problem; status still answers."""
    sid = (await create(client))["scan_id"]
    hostile = {"type": "strategy.progress", "data": b"\xff{not json"}
    await redis.xadd(Keys(settings.prefix).events(sid), hostile)  # type: ignore[arg-type]
    log = await get_json(client, f"/v1/scans/{sid}/log")
    bad = log["events"][-1]
    assert bad["type"] == "strategy.progress" and bad["scan_id"] == sid
    assert isinstance(bad["data"], str) and bad["problem"]
    status = await get_json(client, f"/v1/scans/{sid}")
    assert status["state"] == "queued" and status["warnings_count"] == 1


# -- list ------------------------------------------------------------------------------


async def test_list_is_newest_first_with_cursor_paging(api: str, client: httpx.AsyncClient) -> None:
    """GET /v1/scans pages through the caller's scans only, newest first, via next."""
    created = [(await create(client))["scan_id"] for _ in range(5)]
    async with httpx.AsyncClient(base_url=api, headers=auth("bob")) as bob:
        await create(bob)
    listed: list[str] = []
    cursor = None
    for _ in range(10):
        paging: dict[str, str] = {"cursor": cursor} if cursor else {}
        page = await get_json(client, "/v1/scans", limit=2, **paging)
        assert len(page["scans"]) <= 2
        listed += [s["scan_id"] for s in page["scans"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert listed == created[::-1]


async def test_list_skips_and_forgets_expired_scans(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """A listed scan whose stream has expired is left out and removed from the list."""
    keys = Keys(settings.prefix)
    first, gone, last = [(await create(client))["scan_id"] for _ in range(3)]
    await redis.delete(keys.events(gone))
    page = await get_json(client, "/v1/scans", limit=2)
    assert [s["scan_id"] for s in page["scans"]] == [last, first]
    assert await redis.zscore(keys.user_scans("alice"), gone) is None


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_answers_202_then_409(client: httpx.AsyncClient) -> None:
    """Cancelling answers 202 with the cancelled status; a second cancel is 409 conflict."""
    sid = (await create(client))["scan_id"]
    first = await client.post(f"/v1/scans/{sid}/cancel")
    assert first.status_code == 202
    assert first.json()["state"] == "cancelled"
    assert all(s["state"] == "cancelled" for s in first.json()["strategies"])
    second = await client.post(f"/v1/scans/{sid}/cancel")
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"


async def test_cancel_of_a_completed_scan_is_409(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    """A scan that completed cannot be cancelled."""
    sid = (await create(client, {"strategies": ["noop"]}))["scan_id"]
    await scans.run(store, sid, "noop")
    response = await client.post(f"/v1/scans/{sid}/cancel")
    assert response.status_code == 409 and response.json()["error"] == "conflict"


# -- idempotency -----------------------------------------------------------------------


async def test_same_idempotency_key_gives_the_same_scan(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """The same Idempotency-Key from the same user answers the same scan; jobs are queued once."""
    headers = {"Idempotency-Key": "order-42"}
    first = await create(client, headers=headers)
    second = await create(client, headers=headers)
    assert second["scan_id"] == first["scan_id"]
    assert await job_entries(redis, Keys(settings.prefix, settings.job_partitions)) == 2


async def test_same_idempotency_key_of_another_user_is_another_scan(
    api: str, client: httpx.AsyncClient
) -> None:
    """Idempotency keys are per user: bob's key never finds alice's scan."""
    headers = {"Idempotency-Key": "shared-key"}
    mine = await create(client, headers=headers)
    async with httpx.AsyncClient(base_url=api, headers=auth("bob")) as bob:
        theirs = await create(bob, headers=headers)
    assert theirs["scan_id"] != mine["scan_id"] and theirs["user_id"] == "bob"


async def test_idempotency_key_reused_with_another_request_is_422(
    client: httpx.AsyncClient,
) -> None:
    """A key replayed with a different body is a client error naming the header."""
    headers = {"Idempotency-Key": "k"}
    await create(client, {"strategies": ["noop"]}, headers=headers)
    response = await client.post("/v1/scans", json={"strategies": ["finder"]}, headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]


async def test_idempotency_key_claimed_before_a_crash_creates_that_scan_once(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """A key whose scan was never written (a crash after claiming it) creates the scan under
    the claimed id, and a replay does not queue its jobs again."""
    keys = Keys(settings.prefix, settings.job_partitions)
    claimed = new_scan_id()
    await redis.set(keys.idempotency("alice", digest("crashed")), claimed)
    headers = {"Idempotency-Key": "crashed"}
    first = await create(client, headers=headers)
    second = await create(client, headers=headers)
    assert first["scan_id"] == second["scan_id"] == claimed
    assert await job_entries(redis, keys) == 2
    assert await redis.zscore(keys.user_scans("alice"), claimed) is not None


# -- hot path --------------------------------------------------------------------------


async def _commandstats(redis: Redis) -> dict[str, int]:
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def test_steady_state_status_read_is_one_round_trip(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once cached, a status read sends one command to Redis: an XRANGE, nothing else."""
    sid = (await create(client))["scan_id"]
    assert (await client.get(f"/v1/scans/{sid}")).status_code == 200  # warm the cache
    sends: list[str] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends.append(threading.current_thread().name)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    before = await _commandstats(redis)
    sends.clear()
    for _ in range(3):
        assert (await client.get(f"/v1/scans/{sid}")).status_code == 200
    server_sends = [name for name in sends if name.startswith("uvicorn")]
    after = await _commandstats(redis)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: n for k, n in delta.items() if n and k != "info"}
    assert len(server_sends) == 3  # one round trip per read
    assert delta == {"xrange": 3}


async def test_a_hand_deleted_last_entry_does_not_make_a_cached_scan_vanish(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """Given a cached scan, when its last entry is XDEL'd by hand, status is still 200."""
    sid = (await create(client))["scan_id"]
    events = Keys(settings.prefix).events(sid)
    await redis.xadd(events, {"type": "strategy.exploded", "data": "{}"})
    warm = await client.get(f"/v1/scans/{sid}")
    assert warm.status_code == 200 and warm.json()["warnings_count"] == 1
    await redis.xdel(events, warm.json()["last_event_id"])
    again = await client.get(f"/v1/scans/{sid}")
    assert again.status_code == 200 and again.json()["scan_id"] == sid


async def test_expired_stream_is_404_even_when_cached(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """A scan whose stream is gone is 404 everywhere, though its view was cached."""
    sid = (await create(client))["scan_id"]
    assert (await client.get(f"/v1/scans/{sid}")).status_code == 200
    await redis.delete(Keys(settings.prefix).events(sid))
    unknown = await client.get(f"/v1/scans/{new_scan_id()}")
    for method, path in [("GET", ""), ("GET", "/results"), ("GET", "/log"), ("POST", "/cancel")]:
        response = await client.request(method, f"/v1/scans/{sid}{path}")
        assert response.status_code == 404
        assert response.content == unknown.content


# -- ops -------------------------------------------------------------------------------


async def test_strategies_lists_name_and_description(client: httpx.AsyncClient) -> None:
    """GET /v1/strategies lists every loaded strategy with its description."""
    body = await get_json(client, "/v1/strategies")
    names = {s["name"]: s["description"] for s in body["strategies"]}
    assert {"noop", "finder"} <= names.keys()
    assert all(isinstance(d, str) and d for d in names.values())


async def test_health_and_readiness(api: str) -> None:
    """/healthz and /readyz answer 200 without a token while Redis is up."""
    async with httpx.AsyncClient(base_url=api) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).status_code == 200


async def test_metrics_are_prometheus_text_by_route_template(client: httpx.AsyncClient) -> None:
    """/metrics is Prometheus text with requests by route template, scans created and cache hits."""
    sid = (await create(client))["scan_id"]
    await client.get(f"/v1/scans/{sid}")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'route="/v1/scans/{scan_id}",status="200"' in text
    assert sid not in text
    assert "scanstream_scans_created_total 1.0" in text
    assert "scanstream_projection_cache_hits_total" in text


async def test_openapi_lists_every_contract_path(client: httpx.AsyncClient) -> None:
    """/openapi.json is an OpenAPI 3.2 JSON document covering every route, with resolvable refs."""
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.text)
    assert doc["openapi"].startswith("3.2")
    for path, methods in CONTRACT_PATHS.items():
        assert methods <= set(doc["paths"][path]), path
    events = doc["paths"]["/v1/scans/{scan_id}/events"]["get"]["responses"]["200"]
    assert "text/event-stream" in events["content"]
    schemas = doc["components"]["schemas"]
    for ref in set(_refs(doc)):
        _, _, kind, name = ref.split("/")  # "#/components/schemas/X" or ".../responses/X"
        assert name in doc["components"][kind], ref
    refs = {r.rsplit("/", 1)[1] for r in _refs(doc)}
    assert {"ScanStatus", "ScanResults", "ErrorBody", "CreateScan", "ScanRequested"} <= refs
    assert "queued" in schemas["ScanStatus"]["properties"]["state"]["enum"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


async def test_hostile_log_entries_are_reported_in_status_and_metrics(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """Entries written by hand that no fold can read show in status and in /metrics."""
    sid = (await create(client))["scan_id"]
    events = Keys(settings.prefix).events(sid)
    await redis.xadd(events, {"type": "strategy.started", "data": "{not json"})
    await redis.xadd(events, {"type": "scan.exploded", "data": "{}"})
    status = await client.get(f"/v1/scans/{sid}")
    assert status.status_code == 200
    assert status.json()["warnings_count"] == 2
    metrics = (await client.get("/metrics")).text
    line = next(
        x for x in metrics.splitlines() if x.startswith("scanstream_log_entries_unreadable")
    )
    assert float(line.split()[-1]) >= 2
