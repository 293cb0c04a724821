"""The processes around the long-poll benchmark (bench/long_polls.py):

- `python -m bench.longpoll_peers clients ...`: one process holding many
  `GET /v1/scans/{id}/results?wait=S` requests on raw asyncio sockets (HTTP/1.1, one
  connection each); when all are answered it writes each one's status and the wall-clock
  time its answer arrived to a JSON file and prints `done`;
- `naive_app()`: the baseline, a bare starlette long-poll endpoint where each waiter runs
  its own `XREAD BLOCK` on its own Redis connection until the terminal event (the design
  the fan-out replaces), with `GET /waiting` saying how many wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from bench.sse_peers import _run

# -- clients ---------------------------------------------------------------------------


async def one(host: str, port: int, token: str, path: str) -> tuple[int, float]:
    """One long-poll on a connection of its own: (status, time.time() of its answer)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        answered = time.time()
        await reader.read()  # the body, until the server closes
        return int(head.split(b" ", 2)[1]), answered
    finally:
        writer.close()


async def clients(
    host: str, port: int, token: str, scan_id: str, count: int, wait_s: float
) -> dict[str, Any]:
    path = f"/v1/scans/{scan_id}/results?wait={wait_s:g}"
    tasks = []
    for _ in range(count):  # about 1,000 connections a second: no burst past the backlog
        tasks.append(asyncio.ensure_future(one(host, port, token, path)))
        await asyncio.sleep(0.001)
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    out: dict[str, Any] = {"statuses": {}, "answered": [], "errors": 0}
    for answer in answers:
        if isinstance(answer, BaseException):
            out["errors"] += 1
            continue
        status, at = answer
        out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
        out["answered"].append(at)
    return out


# -- the baseline: one XREAD BLOCK (and connection) per waiter ----------------------------


def naive_app() -> Any:
    """`results?wait=S` where every waiter blocks in XREAD on a connection of its own until
    the terminal event or S seconds (no auth, no caps, no fold): what the fan-out replaces."""
    from redis.asyncio import Redis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from scanstream import events as ev
    from scanstream.live import sse
    from scanstream.storage.keys import Keys

    keys = Keys(os.environ["SCANSTREAM_PREFIX"])
    redis = Redis.from_url(
        os.environ["SCANSTREAM_REDIS_URL"], max_connections=5000, socket_timeout=None
    )
    waiting = 0

    async def results(request: Request) -> JSONResponse:
        nonlocal waiting
        key = keys.events(request.path_params["scan_id"])
        until = time.monotonic() + float(request.query_params.get("wait", "0"))
        last, ended = "0-0", False
        waiting += 1
        try:
            while not ended:
                remaining_ms = int((until - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    break
                reply: Any = await redis.xread({key: last}, block=remaining_ms, count=100)
                for entry_id, fields in reply[0][1] if reply else ():
                    entry = ev.decode_entry(entry_id, fields)
                    last, ended = entry.id, ended or sse.ends_stream(entry)
        finally:
            waiting -= 1
        return JSONResponse({"complete": ended})

    async def count(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(waiting))

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/scans/{scan_id}/results", results),
            Route("/waiting", count),
            Route("/healthz", healthz),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.longpoll_peers")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--wait", type=float, required=True)
    c.add_argument("scan_id")
    args = p.parse_args(argv)
    result = _run(clients("127.0.0.1", args.port, args.token, args.scan_id, args.count, args.wait))
    with open(args.out, "w") as f:
        json.dump(result, f)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
