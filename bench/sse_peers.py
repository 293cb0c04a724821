"""The processes around the SSE fan-out benchmark (bench/sse_fanout.py):

- `python -m bench.sse_peers writer ...`: appends progress events to running scans at a
  steady rate through the real EventStore (fenced Lua writes), each carrying its send
  time (`message = "t=<unix seconds>"`), then completes every scan;
- `python -m bench.sse_peers clients ...`: one process holding many SSE subscribers on
  raw asyncio sockets (HTTP/1.1, chunked); it prints `ready` once every stream has
  delivered its first event, and writes delivery latencies and the ids each stream
  received to a JSON file when all streams have ended;
- `naive_app()`: the baseline, a bare starlette SSE endpoint where each subscriber runs its
  own `XREAD BLOCK` loop on its own Redis connection (what fan-out replaces).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

ID_RE = re.compile(rb"^id: (\S+)$", re.MULTILINE)
SENT_RE = re.compile(rb'"message":"t=([0-9.]+)"')
TERMINAL_RE = re.compile(rb"^event: scan\.(completed|failed|cancelled)$", re.MULTILINE)


# -- writer ----------------------------------------------------------------------------


async def write(
    redis_url: str, prefix: str, scan_ids: list[str], rate: float, duration_s: float
) -> dict[str, Any]:
    from scanstream import events as ev
    from scanstream.storage.connection import client
    from scanstream.storage.events import EventStore
    from scanstream.storage.keys import Keys

    redis = client(redis_url)
    store = EventStore(redis, Keys(prefix), retention_s=3600)
    strategy = "noop_01"
    attempts = {}
    for scan_id in scan_ids:
        started = await store.start_strategy(scan_id, strategy, "bench-writer")
        assert started.ok, started
        attempts[scan_id] = started.attempt
    interval = 1.0 / (rate * len(scan_ids))  # one event every `interval`, round robin
    sent = 0
    t0 = time.monotonic()
    total = int(duration_s * rate * len(scan_ids))
    late = 0.0
    while sent < total:
        scan_id = scan_ids[sent % len(scan_ids)]
        due = t0 + sent * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        event = ev.stamp(
            ev.StrategyProgress,
            strategy=strategy,
            attempt=attempts[scan_id],
            progress=min(1.0, sent / total),
            message=f"t={time.time():.6f}",
        )
        wrote = await store.append_strategy_events(scan_id, strategy, attempts[scan_id], [event])
        assert wrote.ok, wrote
        sent += 1
    elapsed = time.monotonic() - t0
    for scan_id in scan_ids:
        done = await store.finish_strategy(
            scan_id,
            strategy,
            attempts[scan_id],
            [
                ev.stamp(
                    ev.StrategyCompleted,
                    strategy=strategy,
                    attempt=attempts[scan_id],
                    opportunities=0,
                    duration_ms=int(elapsed * 1000),
                )
            ],
        )
        assert done.ok and done.terminal == "scan.completed", done
    await redis.aclose()
    return {
        "events": sent,
        "seconds": round(elapsed, 2),
        "rate": round(sent / elapsed, 1),
        "max_late_ms": round(late * 1000, 1),
    }


# -- subscribers -----------------------------------------------------------------------


class Subscriber:
    def __init__(self, scan_id: str) -> None:
        self.scan_id = scan_id
        self.ids: list[bytes] = []
        self.latencies: list[float] = []
        self.first = asyncio.Event()
        self.ended = False
        self.error: str | None = None


async def follow(host: str, port: int, token: str, sub: Subscriber) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        sub.error = f"connect: {exc}"
        sub.first.set()
        return
    try:
        writer.write(
            f"GET /v1/scans/{sub.scan_id}/events HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            sub.error = f"status {status}"
            return
        buffer = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            now = time.time()
            buffer += chunk[:-2]
            *messages, buffer = buffer.split(b"\n\n")
            for message in messages:
                found = ID_RE.search(message)
                if found is None:
                    continue  # a comment or the retry hint
                sub.ids.append(found.group(1))
                sent = SENT_RE.search(message)
                if sent is not None:
                    sub.latencies.append(now - float(sent.group(1)))
                sub.first.set()
                if TERMINAL_RE.search(message):
                    sub.ended = True
                    return
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        sub.error = f"{type(exc).__name__}: {exc}"
    finally:
        sub.first.set()
        writer.close()


async def clients(
    host: str, port: int, token: str, scan_ids: list[str], timeout_s: float
) -> dict[str, Any]:
    subs = [Subscriber(s) for s in scan_ids]
    gate = asyncio.Semaphore(64)  # connects in flight

    async def one(sub: Subscriber) -> None:
        async with gate:
            task = asyncio.create_task(follow(host, port, token, sub))
            await sub.first.wait()
        await task

    tasks = [asyncio.create_task(one(s)) for s in subs]
    await asyncio.gather(*(s.first.wait() for s in subs))
    print("ready", flush=True)
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for t in pending:
        t.cancel()
    return {
        "latencies": [round(x, 6) for s in subs for x in s.latencies],
        "streams": [
            {
                "scan_id": s.scan_id,
                "count": len(s.ids),
                "digest": hashlib.sha256(b",".join(s.ids)).hexdigest(),
                "ended": s.ended,
                "error": s.error,
            }
            for s in subs
        ],
    }


# -- the baseline: one XREAD BLOCK loop (and connection) per subscriber ------------------


def naive_app() -> Any:
    """SSE where every subscriber replays with XRANGE then blocks in XREAD on a connection
    of its own (no auth, no caps): the design the fan-out replaces."""
    from redis.asyncio import Redis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from scanstream import events as ev
    from scanstream.live import sse
    from scanstream.storage.keys import Keys

    keys = Keys(os.environ["SCANSTREAM_PREFIX"])
    redis = Redis.from_url(
        os.environ["SCANSTREAM_REDIS_URL"], max_connections=5000, socket_timeout=None
    )

    async def events(request: Request) -> StreamingResponse:
        scan_id = request.path_params["scan_id"]
        key = keys.events(scan_id)

        async def stream() -> AsyncIterator[bytes]:
            last = "0-0"
            replay: Any = await redis.xrange(key, "-", "+")
            for entry_id, fields in replay:
                entry = ev.decode_entry(entry_id, fields)
                last = entry.id
                yield sse.message(scan_id, entry)
            while True:
                reply: Any = await redis.xread({key: last}, block=15_000, count=100)
                if not reply:
                    yield sse.KEEPALIVE
                    continue
                for entry_id, fields in reply[0][1]:
                    entry = ev.decode_entry(entry_id, fields)
                    last = entry.id
                    yield sse.message(scan_id, entry)
                    if sse.ends_stream(entry):
                        return

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def healthz(request: Request) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/v1/scans/{scan_id}/events", events), Route("/healthz", healthz)]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sse_peers")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writer")
    w.add_argument("--redis-url", required=True)
    w.add_argument("--prefix", required=True)
    w.add_argument("--rate", type=float, required=True, help="events per second per scan")
    w.add_argument("--duration", type=float, required=True)
    w.add_argument("scan_ids", nargs="+")
    c = sub.add_parser("clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--timeout", type=float, default=300.0)
    c.add_argument("scan_ids", nargs="+", help="one subscriber per id (repeat ids)")
    args = p.parse_args(argv)
    if args.cmd == "writer":
        result = _run(write(args.redis_url, args.prefix, args.scan_ids, args.rate, args.duration))
        print(json.dumps(result), flush=True)
    else:
        result = _run(clients("127.0.0.1", args.port, args.token, args.scan_ids, args.timeout))
        with open(args.out, "w") as f:
            json.dump(result, f)
        print("done", flush=True)
    return 0


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    sys.exit(main())
