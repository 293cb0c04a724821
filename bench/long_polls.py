"""Benchmark 5 (issue 8): long-polls waiting on one API process.

1,000 `GET /v1/scans/{id}/results?wait=60` on one running scan, held by a client process
(raw asyncio sockets, bench/longpoll_peers.py), against ONE `scanstream api --workers 1`
process with the wait caps raised. Then the scan ends. Figures:

- Redis connections held by the API process before the waiters come and while all of them
  wait (CLIENT LIST, matched to the process's own sockets through /proc);
- the answers: every one should be 200 (a 503 or 429 here would be a failure);
- wake-up: from just before the terminal event is written to each answer's arrival, p50 /
  p99 / max;
- memory per waiter: (RSS with everyone waiting - RSS idle) / waiters.

Baseline, same run, same clients: a bare starlette endpoint where each waiter blocks in
an `XREAD BLOCK` of its own on a Redis connection of its own (what the fan-out replaces).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.harness import (
    USER,
    Bench,
    Proc,
    Row,
    bearer,
    http_request,
    percentile,
    running,
    say,
)
from bench.sse_fanout import redis_connections, rss_kib

NAME = "long_polls"
PREFIX = "bench5"
WAIT_S = 60.0


def _count(quick: bool) -> int:
    return 200 if quick else 1000


async def _create_scan(redis_url: str) -> str:
    """A scan with no job queued: it stays `queued`, so every long-poll on it waits."""
    from scanstream import events as ev
    from scanstream.ids import new_scan_id
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore
    from scanstream.storage.keys import Keys

    redis = client(redis_url)
    try:
        store = EventStore(redis, Keys(PREFIX), retention_s=3600)
        scan_id = new_scan_id()
        requested = ev.stamp(ev.ScanRequested, user_id=USER, strategies=["noop_01"], params={})
        await store.create_scan(scan_id, requested)
        return scan_id
    finally:
        await redis.aclose()


async def _end_scan(redis_url: str, scan_id: str) -> float:
    """Cancel the scan (its terminal event); returns the wall-clock time just before."""
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore
    from scanstream.storage.keys import Keys

    redis = client(redis_url)
    try:
        store = EventStore(redis, Keys(PREFIX), retention_s=3600)
        await redis.ping()
        sent = time.time()
        status, _ = await store.end_scan(scan_id, "scan.cancelled")
        assert status == "ok", status
        return sent
    finally:
        await redis.aclose()


def _waiting(server: Proc, label: str) -> int:
    if label == "naive":
        _, body = http_request("GET", f"{server.url}/waiting")
        return int(body)
    _, body = http_request("GET", f"{server.url}/metrics")
    for line in body.decode().splitlines():
        if line.startswith("scanstream_results_waiting "):
            return int(float(line.split()[1]))
    raise RuntimeError("scanstream_results_waiting is not in /metrics")


def _until(what: str, check: Any, timeout_s: float, alive: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s}s")
        time.sleep(0.1)


def measure(b: Bench, server: Proc, label: str, count: int) -> dict[str, Any]:
    b.flush()
    scan_id = asyncio.run(_create_scan(b.redis_url))
    out = b.tmp / f"longpoll-{label}-{time.monotonic_ns()}.json"
    client = Proc(
        f"longpoll-clients-{label}",
        [
            sys.executable,
            "-m",
            "bench.longpoll_peers",
            "clients",
            "--port",
            str(server.port),
            "--token",
            bearer(),
            "--out",
            str(out),
            "--count",
            str(count),
            "--wait",
            str(WAIT_S),
            scan_id,
        ],
        b.env(PREFIX),
        b.log_dir / f"longpoll-clients-{label}-{time.monotonic_ns()}.log",
    )
    with running(server):
        time.sleep(0.5)
        idle_conns, idle_kib = redis_connections(b, server.pid), rss_kib(server.pid)
        with running(client):
            _until(
                f"{count} waiting",
                lambda: _waiting(server, label) >= count,
                120,
                client.check_alive,
            )
            time.sleep(1.0)  # settled: every waiter is parked
            conns, kib = redis_connections(b, server.pid), rss_kib(server.pid)
            ended = asyncio.run(_end_scan(b.redis_url, scan_id))
            _until(
                "every answer",
                lambda: "done" in client.log_tail(100).split(),
                WAIT_S + 30,
                lambda: None,
            )
    body = json.loads(out.read_text())
    wake = [at - ended for at in body["answered"]]
    return {
        "waiters": count,
        "statuses": body["statuses"],
        "errors": body["errors"],
        "redis_connections_idle": idle_conns,
        "redis_connections_waiting": conns,
        "kib_per_waiter": round((kib - idle_kib) / count, 1),
        "wake_p50_ms": round(percentile(wake, 50) * 1000, 1),
        "wake_p99_ms": round(percentile(wake, 99) * 1000, 1),
        "wake_max_ms": round(max(wake) * 1000, 1) if wake else None,
    }


def api_server(b: Bench) -> Proc:
    api = b.api(PREFIX, name="longpoll-api")
    api.env = {**api.env, "SCANSTREAM_WAIT_MAX_PER_USER": "100000", "SCANSTREAM_WAIT_MAX": "100000"}
    return api


def naive_server(b: Bench) -> Proc:
    return b.uvicorn_app("bench.longpoll_peers:naive_app", "longpoll-naive", PREFIX)


def _line(m: dict[str, Any]) -> str:
    return (
        f"answers {m['statuses']} ({m['errors']} errors); Redis connections "
        f"{m['redis_connections_idle']} idle -> {m['redis_connections_waiting']} waiting; "
        f"wake p50 {m['wake_p50_ms']} ms, p99 {m['wake_p99_ms']} ms; "
        f"{m['kib_per_waiter']} KiB per waiter"
    )


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    count = _count(b.quick)
    say(f"  {count} long-polls (wait={WAIT_S:g}) on one scan, one API process, then it ends")
    ours = measure(b, api_server(b), "api", count)
    say(f"  scanstream (fan-out): {_line(ours)}")
    naive = measure(b, naive_server(b), "naive", count)
    say(f"  one XREAD BLOCK per waiter: {_line(naive)}")
    all_200 = ours["statuses"] == {"200": count} and not ours["errors"]
    rows = [
        Row(
            NAME,
            f"{count} long-polls: Redis connections held by the API",
            str(ours["redis_connections_waiting"]),
            str(naive["redis_connections_waiting"]),
            target="O(1) in waiters",
            verdict="ok" if ours["redis_connections_waiting"] <= 20 else "MISSED",
        ),
        Row(
            NAME,
            f"{count} long-polls: answered 200",
            str(ours["statuses"].get("200", 0)),
            str(naive["statuses"].get("200", 0)),
            target=f"{count}",
            verdict="ok" if all_200 else "MISSED",
        ),
        Row(
            NAME,
            "long-poll wake-up after the terminal event, p50 / p99 (ms)",
            f"{ours['wake_p50_ms']} / {ours['wake_p99_ms']}",
            f"{naive['wake_p50_ms']} / {naive['wake_p99_ms']}",
        ),
        Row(
            NAME,
            "API memory per waiting long-poll",
            f"{ours['kib_per_waiter']} KiB",
            f"{naive['kib_per_waiter']} KiB",
        ),
    ]
    return {"waiters": count, "fanout": ours, "naive_xread_per_waiter": naive}, rows


if __name__ == "__main__":  # `python -m bench.long_polls [--quick]`: this benchmark alone
    from bench.__main__ import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
