"""The baseline HTTP app: one endpoint that does one Redis GET and answers small JSON.

Served by the same ASGI server with the same flags as `scanstream api`
(`uvicorn --loop uvloop --http httptools --no-access-log --log-level warning`, one
process), with a Redis client built by the same `scanstream.storage.connection.client`, so the
status-read ratio measures what scanstream adds on top of "an HTTP request that costs
one Redis round trip".

    BENCH_REDIS_URL=redis://... uvicorn --factory bench.bare_app:app_from_env ...
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scanstream.storage import connection

KEY = "bench:bare"
PATH = "/bare"
POOL_SIZE = 256  # the API's hot pool size

_encode = msgspec.json.Encoder().encode


def create_app(url: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = connection.client(url, max_connections=POOL_SIZE)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    async def bare(request: Request) -> Response:
        value = await request.app.state.redis.get(KEY)
        text = value.decode() if value is not None else None
        return Response(_encode({"ok": True, "value": text}), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[Route(PATH, bare, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    return create_app(os.environ["BENCH_REDIS_URL"])
