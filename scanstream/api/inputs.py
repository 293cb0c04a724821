"""Reading what a request sends: a bounded body, query parameters, headers."""

from __future__ import annotations

import math
import re

from starlette.requests import Request
from starlette.responses import Response

from scanstream.api.errors import BadRequest, PayloadTooLarge
from scanstream.errors import InvalidRequest
from scanstream.ids import is_entry_id

IDEMPOTENCY_KEY_PATTERN = r"[\x20-\x7e]{1,200}"  # /openapi.json states this one
IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
NO_STORE = {"Cache-Control": "no-store"}


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        body,
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
        media_type="application/json",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes:
    by its Content-Length before reading, or while counting a chunked stream."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest("Content-Length is not a number.")
        if int(declared) > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidRequest(f"{name}: must be a whole number from {lo} to {hi}", field=name)
    return int(raw)


def wait_param(request: Request, name: str, hi: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= hi):
        raise InvalidRequest(
            f"{name}: must be a number of seconds above 0, at most {hi:g}", field=name
        )
    return value


def entry_id(raw: str | None, name: str) -> str | None:
    """A log entry id the client sends to resume after (`?after=`, `Last-Event-ID`), or
    None when absent. Anything else, the empty string included, is a 400: `/log` and the
    event stream check it alike."""
    if raw is None:
        return None
    if not is_entry_id(raw):
        raise BadRequest(
            f"{name}: {raw[:40]!r} is not an event id; ids look like 1700000000000-0 "
            "(use 0-0 to start from the beginning)."
        )
    return raw


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if IDEMPOTENCY_KEY_RE.fullmatch(raw) is None:
        raise InvalidRequest(
            "Idempotency-Key: must be 1 to 200 printable ASCII characters",
            field="Idempotency-Key",
        )
    return raw
