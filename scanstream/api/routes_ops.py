"""Operational routes: liveness, readiness, metrics, the strategy list, the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scanstream.api.auth import authenticate
from scanstream.api.context import context
from scanstream.api.inputs import json_response
from scanstream.api.metrics import CONTENT_TYPE
from scanstream.api.openapi import openapi_json


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Never touches Redis."""
    return json_response(b'{"status":"ok"}')


async def readyz(request: Request) -> Response:
    """Readiness: Redis answers PING within the request deadline (else StoreUnavailable,
    answered 503): a frozen Redis makes the process not ready, as a dead one does."""
    ctx = context(request)
    with ctx.service.deadline():
        await ctx.storage.ping()
    return json_response(b'{"status":"ready"}')


async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


async def strategies(request: Request) -> Response:
    ctx = context(request)
    authenticate(request, ctx.secret)
    return json_response(ctx.strategies_json)


async def openapi(request: Request) -> Response:
    names: tuple[str, ...] = request.app.state.strategy_names  # this server's strategies
    return Response(openapi_json(names), media_type="application/json")


ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/v1/strategies", strategies, methods=["GET"]),
]
