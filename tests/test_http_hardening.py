"""The HTTP server's own limits, over real sockets to a real uvicorn server: oversized
headers, stalled clients, the connection cap, malformed requests. Every answer is the
contract's JSON error, and the server keeps answering everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scanstream.api import create_app
from scanstream.api.protocol import LINGER_S
from scanstream.settings import Settings
from tests.support.api_events import auth
from tests.support.http import serve
from tests.support.procs import api_proc, running
from tests.support.rawhttp import (
    RawAnswer,
    connect,
    exchange,
    parse,
    read_until_closed,
)

STALL_TIMEOUT_S = 1.0  # the tests' header and body timeouts (the defaults are 10 s and 20 s)
MIB = 1024 * 1024


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.with_(header_timeout_s=STALL_TIMEOUT_S, body_timeout_s=STALL_TIMEOUT_S)


@pytest.fixture
def api(limited: Settings) -> Iterator[str]:
    with serve(create_app(limited), settings=limited) as url:
        yield url


def assert_json_error(answer: RawAnswer | httpx.Response, status: int, code: str) -> None:
    if isinstance(answer, httpx.Response):
        status_code, headers, body = answer.status_code, answer.headers, answer.json()
    else:
        status_code, headers, body = answer.status, answer.headers, answer.json()
    assert status_code == status, body
    assert headers["content-type"] == "application/json"
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]


def healthy(url: str) -> float:
    """Seconds a normal request took to be answered 200."""
    t0 = time.monotonic()
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    return time.monotonic() - t0


# -- header size -----------------------------------------------------------------------


def test_the_default_limits_are_bounded() -> None:
    """Out of the box: headers at most 16 KiB, stalled clients closed within 30 s."""
    for settings in (Settings(), Settings.from_env({})):
        assert settings.max_header_bytes == 16 * 1024
        assert 0 < settings.header_timeout_s <= 30
        assert 0 < settings.body_timeout_s <= 30
        assert settings.max_connections > settings.sse_max + settings.wait_max


def test_a_1_mib_header_is_431_json(api: str) -> None:
    """A 1 MiB header is refused with 431 request_header_too_large, and the connection
    closes; a request just under the limit is served as usual."""
    response = httpx.get(api + "/healthz", headers={"X-Big": "a" * MIB}, timeout=10)
    assert_json_error(response, 431, "request_header_too_large")
    assert response.headers["connection"] == "close"
    under = httpx.get(api + "/healthz", headers={"X-Big": "a" * 15_000}, timeout=10)
    assert under.status_code == 200


def test_many_small_headers_over_the_limit_are_431(api: str) -> None:
    """The limit is on the request line and headers together, not on one header."""
    headers = {f"X-H{i}": "v" * 100 for i in range(200)}  # ~22 KiB in all
    response = httpx.get(api + "/healthz", headers=headers, timeout=10)
    assert_json_error(response, 431, "request_header_too_large")


def test_a_pipelined_request_with_a_huge_head_is_431(api: str) -> None:
    """A second request sent in the same packet as the first is held to the limit too."""
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    with connect(api) as sock:
        sock.sendall(first + second)
        raw = read_until_closed(sock, 10)
    ok, _, rest = raw.partition(b'{"status":"ok"}')
    assert ok.startswith(b"HTTP/1.1 200")
    assert_json_error(parse(rest), 431, "request_header_too_large")


def test_huge_headers_do_not_grow_the_api_process(settings: Settings, tmp_path: Path) -> None:
    """`scanstream api` (the production command): 8 clients sending 8 MiB headers at once
    each get a 431, and the process's memory stays flat (it used to buffer them whole)."""
    with running(api_proc(settings, tmp_path)) as (api,):
        assert api.process is not None
        assert healthy(api.url) < 5
        before = rss_mib(api.process.pid)
        answers: list[RawAnswer | BaseException] = []

        def send() -> None:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * MIB)
            try:
                answers.append(exchange(api.url, request + b"\r\n\r\n", timeout_s=20))
            except OSError as exc:
                answers.append(exc)

        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        grown = rss_mib(api.process.pid) - before
        assert healthy(api.url) < 1
    assert all(isinstance(a, RawAnswer) for a in answers), answers
    for answer in answers:
        assert isinstance(answer, RawAnswer)
        assert_json_error(answer, 431, "request_header_too_large")
    print(f"RSS {before:.1f} MiB before, {grown:+.1f} MiB after 8 x 8 MiB headers")
    assert grown < 16, f"the API grew by {grown:.1f} MiB"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- stalled clients -------------------------------------------------------------------


def test_300_stalled_connections_do_not_stop_the_server(api: str) -> None:
    """300 connections that never finish their request line, headers or body: a normal
    request is still answered within 1 s, and every stalled one is answered 408 and
    closed once its timeout has passed (well within 30 s)."""
    token = auth()["Authorization"].encode()
    stalls = {
        "request line": b"GET /v1/sca",
        "headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "body": b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"strat',
    }
    socks: list[tuple[str, socket.socket]] = []
    try:
        for i in range(300):
            kind = list(stalls)[i % 3]
            sock = connect(api)
            sock.sendall(stalls[kind])
            socks.append((kind, sock))
        t0 = time.monotonic()
        assert healthy(api) < 1
        for kind, sock in socks:
            answer = parse(read_until_closed(sock, timeout_s=max(0.1, t0 + 30 - time.monotonic())))
            assert_json_error(answer, 408, "request_timeout")
            assert answer.headers["connection"] == "close", kind
        took = time.monotonic() - t0
    finally:
        for _, sock in socks:
            sock.close()
    assert took < STALL_TIMEOUT_S + LINGER_S + 5, took
    assert healthy(api) < 1


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(api: str) -> None:
    """A connection that never sends a byte is closed after the header timeout: there is
    no request to answer."""
    with connect(api) as sock:
        t0 = time.monotonic()
        assert read_until_closed(sock, timeout_s=10) == b""
        assert STALL_TIMEOUT_S * 0.9 <= time.monotonic() - t0 < STALL_TIMEOUT_S + 2


def test_a_kept_alive_connection_that_stalls_its_next_request_is_408(api: str) -> None:
    """The header timeout starts again with each request on a kept-alive connection."""
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(STALL_TIMEOUT_S * 1.5)  # idle between requests: the keep-alive's 5 s rule
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        assert_json_error(parse(read_until_closed(sock, 10)), 408, "request_timeout")


def test_blank_lines_do_not_keep_an_idle_connection_open(limited: Settings) -> None:
    """Bytes that start no request (blank lines) do not reset the keep-alive timeout."""
    short = limited.with_(keepalive_timeout_s=1)
    with serve(create_app(short), settings=short) as url, connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(20):
                sock.sendall(b"\r\n")
                time.sleep(0.2)
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError):
                    if sock.recv(1) == b"":
                        raise ConnectionResetError("closed")
        assert time.monotonic() - t0 < 2.5


def test_a_slow_but_steady_body_is_still_cut_off(api: str) -> None:
    """The body timeout bounds the whole body, so a byte every so often does not keep a
    connection forever."""
    token = auth()["Authorization"].encode()
    with connect(api) as sock:
        sock.sendall(
            b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
            b"Content-Length: 50\r\n\r\n"
        )
        t0 = time.monotonic()
        with pytest.raises(OSError):  # the server closes while we still trickle
            for _ in range(50):
                sock.sendall(b" ")
                time.sleep(STALL_TIMEOUT_S / 5)
        answer = parse(read_until_closed(sock, 10))
    assert_json_error(answer, 408, "request_timeout")
    assert time.monotonic() - t0 < STALL_TIMEOUT_S + LINGER_S + 2


# -- the connection cap ----------------------------------------------------------------


def test_past_the_connection_cap_new_connections_get_503_json(limited: Settings) -> None:
    """With 3 connections open (the cap), a fourth is answered 503 server_busy with
    Retry-After and never reaches the app; once they close, requests are served again."""
    capped = limited.with_(max_connections=3, header_timeout_s=30.0)
    with serve(create_app(capped), settings=capped) as url:
        held = [connect(url) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # open, kept alive
            refused = httpx.get(url + "/healthz", timeout=5)
            assert_json_error(refused, 503, "server_busy")
            assert refused.headers["retry-after"] == "1"
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert healthy(url) < 1


# -- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
)
def test_malformed_requests_are_400_json(api: str, request_bytes: bytes) -> None:
    """Bytes that are not HTTP/1.1 are 400 invalid_request in the contract's JSON (the
    server itself used to answer them in plain text), and the connection closes."""
    answer = exchange(api, request_bytes)
    assert_json_error(answer, 400, "invalid_request")
    assert answer.headers["connection"] == "close"


def test_a_broken_chunked_body_is_400_json(api: str) -> None:
    """A chunked body that stops being HTTP while the app reads it: one 400 answer."""
    token = auth()["Authorization"].encode()
    answer = exchange(
        api,
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n",
    )
    assert_json_error(answer, 400, "invalid_request")


def test_an_upgrade_header_is_answered_as_plain_http(api: str) -> None:
    """There are no WebSockets here: an Upgrade request is an ordinary request, answered
    in JSON, and the connection closes after it."""
    answer = exchange(
        api,
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert_json_error(answer, 404, "not_found")
