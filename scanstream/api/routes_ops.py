"""Operational routes: liveness, readiness, metrics, the strategy list, the OpenAPI document."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scanstream.api.auth import authenticate, bearer_of
from scanstream.api.context import context
from scanstream.api.errors import Unauthorized
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
    """Prometheus text; with `SCANSTREAM_METRICS_TOKEN` set, only for that bearer token."""
    expected = context(request).settings.metrics_token
    if expected is not None:
        _check_metrics_token(request, expected)
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def _check_metrics_token(request: Request, expected: str) -> None:
    token, _ = bearer_of(request)
    if token is None:
        raise Unauthorized(
            "/metrics needs the metrics token: send 'Authorization: Bearer <token>'."
        )
    # Compared as SHA-256 digests: constant time, and equal lengths, so neither the
    # token's bytes nor its length leak through timing.
    given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(given, hashlib.sha256(expected.encode()).digest()):
        raise Unauthorized("The metrics token is invalid.")


async def strategies(request: Request) -> Response:
    ctx = context(request)
    authenticate(request, ctx.secrets)
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
