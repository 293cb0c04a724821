"""Every error the API answers, as `{"error": CODE, "detail": "..."}`, and the handlers
that map exceptions (ours, the store's, Starlette's routing ones) onto them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from scanstream.errors import (
    InvalidRequest,
    QuotaExceeded,
    ScanConflict,
    ScanNotFound,
    StoreUnavailable,
)
from scanstream.storage.errors import CLIENT_FAULTS

log = logging.getLogger("scanstream.api")

SCAN_NOT_FOUND = "No such scan."  # one answer for unknown, malformed, expired and others' scans
RETRY_AFTER_S = 1


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str
    detail: str


_encode = msgspec.json.Encoder().encode


def error_body(code: str, detail: str) -> bytes:
    """The JSON of every error answer, the app's and the HTTP server's own
    (`scanstream.api.protocol`) alike."""
    return _encode(ErrorBody(error=code, detail=detail))


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        error_body(code, detail),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


class ApiError(Exception):
    """An HTTP error answer raised from a handler."""

    status = 400
    code = "invalid_request"

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """400: the body is not JSON."""


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, detail: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after_s)})


def _store_unavailable(request: Request, detail: str) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.store_errors.inc()
    return error_response(503, "store_unavailable", detail, {"Retry-After": str(RETRY_AFTER_S)})


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


async def on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    return error_response(422, "invalid_request", exc.detail)


async def on_quota(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuotaExceeded)
    headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(429, "rate_limited", exc.detail, headers)


async def on_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", SCAN_NOT_FOUND)


async def on_conflict(request: Request, exc: Exception) -> Response:
    return error_response(409, "conflict", str(exc))


async def on_store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("store unavailable: %s", exc)
    return _store_unavailable(request, "The store (Redis) cannot be reached; retry shortly.")


async def on_redis_error(request: Request, exc: Exception) -> Response:
    """A connection-level redis-py error that escaped the store boundary: still a 503."""
    log.warning("redis error outside the store boundary: %r", exc)
    return _store_unavailable(request, "The store (Redis) cannot be reached; retry shortly.")


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    if exc.status_code == 404:
        detail = f"There is nothing at {request.url.path[:200]!r}."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed here; allowed: {allowed}."
    else:
        detail = str(exc.detail)
    return error_response(exc.status_code, code, detail, exc.headers)


async def on_client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up while sending its body: nobody reads this answer."""
    return error_response(400, "invalid_request", "The client disconnected mid-request.")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Anything else: a 500 in our shape (the traceback goes to the log)."""
    return error_response(500, "internal_error", "Something went wrong on our side.")


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    InvalidRequest: on_invalid,
    QuotaExceeded: on_quota,
    ScanNotFound: on_not_found,
    ScanConflict: on_conflict,
    StoreUnavailable: on_store_unavailable,
    **dict.fromkeys(CLIENT_FAULTS, on_redis_error),
    HTTPException: on_http_exception,
    ClientDisconnect: on_client_gone,
    Exception: on_unexpected,
}
