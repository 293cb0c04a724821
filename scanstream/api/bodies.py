"""Request and response bodies of the HTTP API that are not status or results.

The Structs are also the OpenAPI schemas (see `openapi.py`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from scanstream.errors import InvalidRequest, split_validation_message
from scanstream.render import ScanStatus


class CreateScan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/scans`. No `strategies` (or null): every available strategy."""

    strategies: (
        Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=1000)]
        | None
    ) = None
    params: dict[str, Any] | None = None
    # Orders the caller's own waiting scans: higher first (0 to 9); other users' scans
    # are served in turn whatever their priority.
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0


class ScanList(msgspec.Struct, kw_only=True):
    scans: list[ScanStatus]
    next: str | None


class LogEvent(msgspec.Struct, kw_only=True):
    """One log entry, as an SSE message's `data`: the event's own fields plus these.

    An entry that cannot be read carries its raw `data` as a string and a `problem`.
    """

    id: str
    type: str
    scan_id: str


class LogPage(msgspec.Struct, kw_only=True):
    events: list[dict[str, Any]]
    next: str | None


class StrategyInfo(msgspec.Struct, kw_only=True):
    name: str
    description: str


class StrategyList(msgspec.Struct, kw_only=True):
    strategies: list[StrategyInfo]


class StreamToken(msgspec.Struct, kw_only=True):
    """`POST /v1/scans/{id}/stream-token`: a token for that scan's event stream only."""

    token: str
    expires_at: str  # RFC 3339 UTC


class Health(msgspec.Struct, kw_only=True):
    status: str


_create_decoder = msgspec.json.Decoder(CreateScan)


def field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(field path, message) of a msgspec error: `$.strategies[2]` becomes `strategies[2]`."""
    path, message = split_validation_message(str(exc))
    return path.lstrip(".") or "body", message


def decode_create(body: bytes) -> CreateScan:
    """Parse the create body. Raises `ValueError` (not JSON) or `InvalidRequest` (schema)."""
    if not body.strip():
        return CreateScan()  # no body at all: the defaults
    try:
        return _create_decoder.decode(body)
    except msgspec.ValidationError as exc:
        field, msg = field_of(exc)
        if msg.startswith("Object contains unknown field"):
            unknown = msg.split("`")[1] if "`" in msg else field
            raise InvalidRequest(f"{unknown}: unknown field", field=unknown) from None
        raise InvalidRequest(f"{field}: {msg}", field=field) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body: nested too deeply", field="body") from None
