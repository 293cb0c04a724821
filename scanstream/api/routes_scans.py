"""`/v1/scans...`: thin handlers over `ScanService`."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scanstream.api.auth import authenticate
from scanstream.api.bodies import decode_create
from scanstream.api.context import ApiContext, context
from scanstream.api.errors import BadRequest, RateLimited
from scanstream.api.inputs import (
    entry_id,
    idempotency_key,
    int_param,
    json_response,
    read_body,
    wait_param,
)
from scanstream.errors import InvalidRequest, ScanNotFound
from scanstream.ids import is_scan_id
from scanstream.live.admission import Full
from scanstream.live.fanout import RETRY_AFTER_S

MAX_WAIT_S = 60.0
LIST_LIMIT, LIST_MAX = 20, 100
LOG_LIMIT, LOG_MAX = 100, 1000

_encode = msgspec.json.Encoder().encode


def _caller(request: Request) -> tuple[ApiContext, str]:
    ctx = context(request)
    return ctx, authenticate(request, ctx.secrets)


async def scans(request: Request) -> Response:
    """`POST /v1/scans` creates a scan; `GET /v1/scans` lists the caller's."""
    if request.method == "POST":
        return await create_scan(request)
    return await list_scans(request)


async def create_scan(request: Request) -> Response:
    ctx, user = _caller(request)
    key = idempotency_key(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    try:
        parsed = decode_create(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    outcome = await ctx.service.create_scan(
        user, parsed.strategies, parsed.params, key, priority=parsed.priority
    )
    if outcome.created:
        ctx.metrics.scans_created.inc()
    scan_id = outcome.view.scan_id
    return json_response(
        ctx.cache.render(outcome.view, "status"), 202, {"Location": f"/v1/scans/{scan_id}"}
    )


async def list_scans(request: Request) -> Response:
    ctx, user = _caller(request)
    limit = int_param(request, "limit", LIST_LIMIT, 1, LIST_MAX)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not is_scan_id(cursor):
        raise InvalidRequest("cursor: not a cursor this API handed out", field="cursor")
    views, next_cursor = await ctx.service.list_scans(user, limit, cursor)
    # Each status is already encoded (and cached); splice them instead of re-encoding.
    statuses = b",".join(ctx.cache.render(v, "status") for v in views)
    body = b'{"scans":[' + statuses + b'],"next":' + _encode(next_cursor) + b"}"
    return json_response(body)


async def get_status(request: Request) -> Response:
    ctx, user = _caller(request)
    view = await ctx.service.get_view(user, request.path_params["scan_id"])
    return json_response(ctx.cache.render(view, "status"))


async def get_results(request: Request) -> Response:
    ctx, user = _caller(request)
    wait = wait_param(request, "wait", MAX_WAIT_S)
    scan_id = request.path_params["scan_id"]
    if wait is None:
        view = await ctx.service.get_view(user, scan_id)
    else:
        try:
            view = await ctx.service.wait_for_end(user, scan_id, wait)
        except Full as exc:  # too many long-polls waiting: for this user, or on this process
            raise RateLimited(exc.detail, RETRY_AFTER_S) from None
    return json_response(ctx.cache.render(view, "results"))


async def get_log(request: Request) -> Response:
    ctx, user = _caller(request)
    after = entry_id(request.query_params.get("after"), "after")
    limit = int_param(request, "limit", LOG_LIMIT, 1, LOG_MAX)
    events, next_id = await ctx.service.read_log(user, request.path_params["scan_id"], after, limit)
    return json_response(_encode({"events": events, "next": next_id}))


async def cancel(request: Request) -> Response:
    ctx, user = _caller(request)
    view = await ctx.service.cancel_scan(user, request.path_params["scan_id"])
    return json_response(ctx.cache.render(view, "status"), 202)


async def no_such_scan(request: Request) -> Response:
    """Anything else under /v1/scans/ (ids with slashes, traversal): the same 404 as an
    unknown scan, after authentication like every /v1 route."""
    _caller(request)
    raise ScanNotFound(request.url.path[:64])


ROUTES: list[BaseRoute] = [
    Route("/v1/scans", scans, methods=["GET", "POST"]),
    Route("/v1/scans/{scan_id}", get_status, methods=["GET"]),
    Route("/v1/scans/{scan_id}/results", get_results, methods=["GET"]),
    Route("/v1/scans/{scan_id}/log", get_log, methods=["GET"]),
    Route("/v1/scans/{scan_id}/cancel", cancel, methods=["POST"]),
]
# Must come after every other /v1/scans/... route (the SSE route included).
CATCH_ALL: list[BaseRoute] = [
    Route("/v1/scans/{rest:path}", no_such_scan, methods=["GET", "POST"]),
]
