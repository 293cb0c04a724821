"""Every way a request can go wrong, answered as `{"error", "detail"}` with the contract's
status and headers, over a real socket."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scanstream.api import app_from_env, create_app, make_token
from scanstream.embedded import RedisProcess
from scanstream.errors import ConfigError
from scanstream.ids import new_scan_id
from scanstream.settings import Settings
from scanstream.storage.keys import JOB_GROUP, Keys
from tests.support.api_events import auth
from tests.support.http import serve

pytestmark = pytest.mark.anyio

MALFORMED_IDS = [
    "nope",
    "scan_" + "0" * 31,
    "scan_" + "0" * 33,
    "scan_" + "A" * 32,
    "SCAN_" + "0" * 32,
    "scan_" + "é" * 32,
    "scan_" + "0" * 32 + "%0A",
    "scan_" + "0" * 31 + "%00",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "scan_{x}",
    "scan_*",
    "scan_" + "a" * 4000,
]
SCAN_ROUTES = [("GET", ""), ("GET", "/results"), ("GET", "/log"), ("POST", "/cancel")]


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, headers=auth("alice"), timeout=30) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def create(client: httpx.AsyncClient, body: Any = None) -> str:
    response = await client.post("/v1/scans", json=body or {"strategies": ["noop"]})
    assert response.status_code == 202, response.text
    return response.json()["scan_id"]


# -- ids -------------------------------------------------------------------------------


async def test_malformed_ids_are_the_same_404_as_unknown_ones(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """Malformed ids (traversal, unicode, too long, ...) answer the unknown scan's 404,
    and no Redis key is ever built from them."""
    unknown = await client.get(f"/v1/scans/{new_scan_id()}")
    assert_error(unknown, 404, "not_found")
    for bad in MALFORMED_IDS:
        for method, suffix in SCAN_ROUTES:
            response = await client.request(method, f"/v1/scans/{bad}{suffix}")
            assert response.status_code == 404, (bad, suffix, response.text)
            assert response.content == unknown.content, (bad, suffix)
    keys = {str(k, "utf-8") for k in await redis.keys(f"{settings.prefix}*")}  # type: ignore[arg-type]
    assert keys <= {p.jobs for p in Keys(settings.prefix, settings.job_partitions).partitions}


async def test_another_users_scan_is_the_same_404_as_unknown(
    api: str, client: httpx.AsyncClient
) -> None:
    """Bob cannot see, read or cancel alice's scan: the answer is the unknown scan's 404."""
    sid = await create(client)
    async with httpx.AsyncClient(base_url=api, headers=auth("bob")) as bob:
        unknown = await bob.get(f"/v1/scans/{new_scan_id()}")
        for method, suffix in SCAN_ROUTES:
            response = await bob.request(method, f"/v1/scans/{sid}{suffix}")
            assert response.status_code == 404
            assert response.content == unknown.content
        assert (await bob.get("/v1/scans")).json()["scans"] == []
    assert (await client.get(f"/v1/scans/{sid}")).json()["state"] == "queued"


# -- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer not-a-token",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer " + make_token("another-secret", "alice"),
        "Bearer " + make_token("another-secret", "alice").split(".")[0] + ".AAAA",
    ],
)
async def test_missing_or_forged_token_is_401_with_www_authenticate(
    api: str, authorization: str | None
) -> None:
    """Every /v1 route refuses a missing or forged token with 401 and WWW-Authenticate: Bearer."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=api, headers=headers) as anonymous:
        for method, path in [
            ("GET", "/v1/scans"),
            ("POST", "/v1/scans"),
            ("GET", f"/v1/scans/{new_scan_id()}"),
            ("GET", "/v1/strategies"),
            ("GET", "/v1/scans/nope/results"),
        ]:
            response = await anonymous.request(method, path)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"


async def test_access_token_query_is_not_accepted_on_ordinary_routes(api: str) -> None:
    """?access_token= is only for the SSE route: elsewhere it is still 401."""
    token = make_token("test-secret-not-for-production", "alice")
    async with httpx.AsyncClient(base_url=api) as anonymous:
        response = await anonymous.get("/v1/scans", params={"access_token": token})
    assert_error(response, 401, "unauthorized")


# -- bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategies": ["noop", "finder", 3]}, "strategies[2]"),
        ({"strategies": []}, "strategies"),
        ({"strategies": ["noop", "noop"]}, "strategies[1]"),
        ({"strategies": "noop"}, "strategies"),
        ({"params": []}, "params"),
        ({"params": {"bars": 1}}, "params.bars"),
        ({"params": {"symbols": ["../etc"]}}, "params.symbols[0]"),
        ({"strategy": ["noop"]}, "strategy"),
        ([], "body"),
    ],
)
async def test_schema_violations_are_422_naming_the_field(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    """JSON that breaks the schema is 422 invalid_request whose detail names the field."""
    response = await client.post("/v1/scans", json=body)
    detail = assert_error(response, 422, "invalid_request")["detail"]
    assert detail.startswith(field), detail


async def test_absurdly_nested_json_is_422(client: httpx.AsyncClient) -> None:
    """JSON nested deeper than the decoder follows is a 422, not a crash."""
    body = b'{"params": {"a": ' + b"[" * 30000 + b"]" * 30000 + b"}}"
    response = await client.post("/v1/scans", content=body)
    assert assert_error(response, 422, "invalid_request")["detail"].startswith("body")


async def test_unknown_strategy_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """An unknown strategy is 422, and the detail names it."""
    response = await client.post("/v1/scans", json={"strategies": ["noop", "astrology"]})
    detail = assert_error(response, 422, "invalid_request")["detail"]
    assert "astrology" in detail and "strategies[1]" in detail


@pytest.mark.parametrize("raw", [b'{"strategies": [', b"\xff\xfe", b"strategies=noop", b"{'a': 1}"])
async def test_broken_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    """A body that is not JSON is 400 invalid_request."""
    response = await client.post(
        "/v1/scans", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")


async def test_oversized_body_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    """A body over 64 KiB is refused with 413 on its Content-Length."""
    body = b'{"strategies": ["noop"], "params": {"pad": "' + b"x" * 65536 + b'"}}'
    response = await client.post("/v1/scans", content=body)
    assert_error(response, 413, "payload_too_large")


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    """A chunked body (no Content-Length) is counted as it streams and refused past 64 KiB."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"params": {"pad": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}}'

    response = await client.post("/v1/scans", content=chunks())
    assert_error(response, 413, "payload_too_large")


async def test_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    """The limit is 64 KiB exactly: a padded body just under it still creates a scan."""
    body = b'{"strategies": ["noop"]}'
    body += b" " * (64 * 1024 - len(body))
    response = await client.post("/v1/scans", content=body)
    assert response.status_code == 202, response.text


async def test_lying_content_length_is_refused_before_the_body(api: str) -> None:
    """A Content-Length over the limit is answered 413 without the body being sent."""
    token = make_token("test-secret-not-for-production", "alice")
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 10000000\r\n\r\n{"
        )
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


# -- parameters and headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "params", "field"),
    [
        ("/results", {"wait": "0"}, "wait"),
        ("/results", {"wait": "61"}, "wait"),
        ("/results", {"wait": "soon"}, "wait"),
        ("/results", {"wait": "nan"}, "wait"),
        ("/log", {"limit": "0"}, "limit"),
        ("/log", {"limit": "1001"}, "limit"),
        ("/log", {"limit": "ten"}, "limit"),
    ],
)
async def test_bad_query_parameters_are_422(
    client: httpx.AsyncClient, suffix: str, params: dict[str, str], field: str
) -> None:
    """Out-of-range or malformed query parameters are 422 naming the parameter."""
    sid = await create(client)
    response = await client.get(f"/v1/scans/{sid}{suffix}", params=params)
    assert assert_error(response, 422, "invalid_request")["detail"].startswith(field)


@pytest.mark.parametrize(
    "after",
    [
        "0-18446744073709551616",  # past Redis's 64-bit parts: was a 500
        "18446744073709551616-0",
        "99999999999999999999-0",
        "01-0",
        "",
        "abc",
        "1-2-3",
        "\u0661-0",  # a digit, but not an ASCII one
        " 1-0",
    ],
)
async def test_log_after_that_is_not_an_entry_id_is_400_as_on_the_event_stream(
    client: httpx.AsyncClient, after: str
) -> None:
    """`/log?after=` is checked as the event stream checks its resume id: anything but an
    entry id (the empty string, numbers past 19 digits) is 400 naming `after`, on both."""
    sid = await create(client)
    for suffix in ("/log", "/events"):
        response = await client.get(f"/v1/scans/{sid}{suffix}", params={"after": after})
        detail = assert_error(response, 400, "invalid_request")["detail"]
        assert detail.startswith("after"), detail
    assert (await client.get(f"/v1/scans/{sid}/log", params={"after": "0-0"})).status_code == 200
    biggest = "9999999999999999999-9999999999999999999"
    page = await client.get(f"/v1/scans/{sid}/log", params={"after": biggest})
    assert page.status_code == 200 and page.json() == {"events": [], "next": None}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"cursor": "page-2"},
        {"cursor": "scan_../../x"},
        {"cursor": ""},
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """A list limit outside 1..100 or a cursor this API never handed out is 422."""
    assert_error(await client.get("/v1/scans", params=params), 422, "invalid_request")


@pytest.mark.parametrize("key", [b"x" * 201, b"caf\xe9", b"tab\there"])
async def test_bad_idempotency_key_is_422(client: httpx.AsyncClient, key: bytes) -> None:
    """An Idempotency-Key must be 1..200 printable ASCII characters."""
    response = await client.post("/v1/scans", json={}, headers=[(b"Idempotency-Key", key)])
    assert "Idempotency-Key" in assert_error(response, 422, "invalid_request")["detail"]


# -- routing ---------------------------------------------------------------------------


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    """A path nothing answers is a JSON 404."""
    assert_error(await client.get("/v2/anything"), 404, "not_found")
    assert_error(await client.get("/v1/nothing"), 404, "not_found")


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    """A known path with the wrong method is a JSON 405 with Allow."""
    response = await client.delete(f"/v1/scans/{new_scan_id()}")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]
    assert_error(await client.put("/healthz"), 405, "method_not_allowed")
    assert_error(await client.delete("/v1/scans"), 405, "method_not_allowed")


# -- Redis outages ---------------------------------------------------------------------


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "1"


async def test_redis_down_is_503_then_recovers(settings: Settings, tmp_path: Path) -> None:
    """While Redis is stopped every store-backed route is 503 store_unavailable with
    Retry-After (never 404); once it is back on the same port, everything answers again."""
    own = RedisProcess(data_dir=tmp_path / "redis").start()
    try:
        with serve(create_app(settings.with_(redis_url=own.url))) as url:
            async with httpx.AsyncClient(base_url=url, headers=auth("alice"), timeout=30) as c:
                sid = await create(c)
                assert (await c.get(f"/v1/scans/{sid}")).status_code == 200

                own.stop()
                assert_unavailable(await c.get(f"/v1/scans/{sid}"))
                assert_unavailable(await c.get(f"/v1/scans/{sid}/results"))
                assert_unavailable(await c.get(f"/v1/scans/{new_scan_id()}"))
                assert_unavailable(await c.post("/v1/scans", json={"strategies": ["noop"]}))
                assert_unavailable(await c.get("/v1/scans"))
                assert_unavailable(await c.post(f"/v1/scans/{sid}/cancel"))
                assert_unavailable(await c.get("/readyz"))
                assert (await c.get("/healthz")).status_code == 200
                assert "scanstream_store_errors_total 7.0" in (await c.get("/metrics")).text

                own.start()
                assert (await c.get("/readyz")).status_code == 200
                assert (await c.get(f"/v1/scans/{sid}")).json()["state"] == "queued"
                await create(c)
    finally:
        own.stop()


async def test_api_starts_while_redis_is_down(settings: Settings, tmp_path: Path) -> None:
    """The API starts without Redis, says 503 on /readyz, and works once Redis is up."""
    own = RedisProcess(data_dir=tmp_path / "redis")
    try:
        with serve(create_app(settings.with_(redis_url=own.url))) as url:
            async with httpx.AsyncClient(base_url=url, headers=auth("alice"), timeout=30) as c:
                assert_unavailable(await c.get("/readyz"))
                assert_unavailable(await c.post("/v1/scans", json={"strategies": ["noop"]}))
                own.start()
                assert (await c.get("/readyz")).status_code == 200
                await create(c)
                r = Redis.from_url(own.url)
                try:
                    groups = [
                        [g["name"].decode() for g in await r.xinfo_groups(p.jobs)]
                        for p in Keys(settings.prefix, settings.job_partitions).partitions
                    ]
                finally:
                    await r.aclose()
                assert groups == [[JOB_GROUP]] * settings.job_partitions
    finally:
        own.stop()


async def test_an_unexpected_error_is_a_json_500(settings: Settings) -> None:
    """A bug in a handler still answers in the error shape (500 internal_error)."""

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = create_app(settings, extra_routes=[Route("/boom", boom)])
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            assert_error(await c.get("/boom"), 500, "internal_error")


# -- configuration ---------------------------------------------------------------------


def test_app_from_env_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """Without SCANSTREAM_SECRET the API refuses to start, saying which variable to set."""
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.delenv("SCANSTREAM_SECRET", raising=False)
    with pytest.raises(ConfigError, match="SCANSTREAM_SECRET"):
        app_from_env()


def test_app_from_env_requires_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SCANSTREAM_REDIS_URL the API refuses to start (dev sets it for its children)."""
    monkeypatch.setenv("SCANSTREAM_SECRET", "s")
    monkeypatch.delenv("SCANSTREAM_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="SCANSTREAM_REDIS_URL"):
        app_from_env()


def test_app_from_env_builds_the_app(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """With a secret and a Redis URL, app_from_env gives an ASGI app for uvicorn --factory."""
    monkeypatch.setenv("SCANSTREAM_SECRET", "s")
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    assert callable(app_from_env())
