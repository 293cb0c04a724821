"""The OpenAPI 3.2 document, built from the same msgspec Structs the API encodes, and
from the same patterns and limits the server enforces (scanstream.ids, Settings), so that
a request the document calls valid is one the server takes. (3.2 for `itemSchema`: each
Server-Sent Event described as an object, its `data` as JSON.)"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, get_args

import msgspec

from scanstream import events as ev
from scanstream.api.bodies import (
    CreateScan,
    Health,
    LogEvent,
    LogPage,
    ScanList,
    StrategyList,
    StreamToken,
)
from scanstream.api.errors import ErrorBody
from scanstream.api.inputs import IDEMPOTENCY_KEY_PATTERN
from scanstream.ids import ENTRY_ID_PATTERN, SCAN_ID_PATTERN
from scanstream.live.sse import SAFE_EVENT_NAME
from scanstream.projection import ScanState, StrategyState
from scanstream.render import ScanResults, ScanStatus

REF = "#/components/schemas/{name}"
RESPONSE_REF = "#/components/responses/{name}"
EVENT_CLASSES = list(ev.CLASS_OF.values())


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _json(name: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
# What the HTTP server itself may answer to any request, before the app sees it
# (scanstream/api/protocol.py): the same error body, then the connection closes.
SERVER_ANSWERS: dict[str, dict[str, Any]] = {
    "BadHttp": _json(
        "ErrorBody", "`invalid_request`: the request is not valid HTTP/1.1 (the server's answer)."
    ),
    "RequestTimeout": _json(
        "ErrorBody",
        "`request_timeout`: the headers (`SCANSTREAM_HEADER_TIMEOUT`, default 10 s) or the "
        "body (`SCANSTREAM_BODY_TIMEOUT`, default 20 s) took too long to arrive.",
    ),
    "RequestHeaderTooLarge": _json(
        "ErrorBody",
        "`request_header_too_large`: the request line and headers are over "
        "`SCANSTREAM_MAX_HEADER_BYTES` (default 16 KiB).",
    ),
    "ServerBusy": _json(
        "ErrorBody",
        "`server_busy`: the process has `SCANSTREAM_MAX_CONNECTIONS` connections open "
        "(default 10000).",
        _RETRY_AFTER,
    ),
    "MethodNotAllowed": _json(
        "ErrorBody",
        "`method_not_allowed`: a path this document lists, with a method it does not list "
        "for it (any path answers so).",
        {"Allow": {"schema": {"type": "string"}, "description": "The methods it takes."}},
    ),
}
ERRORS: dict[str, dict[str, Any]] = {
    "400": _json(
        "ErrorBody", "`invalid_request`: the body is not JSON, or the request not HTTP/1.1."
    ),
    "401": _json(
        "ErrorBody",
        "`unauthorized`: missing, invalid or expired bearer token (the detail says "
        "which), or a stream token outside its one scan's event stream.",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "404": _json(
        "ErrorBody",
        "`not_found`: unknown, malformed, expired or another user's "
        "scan: the same answer for each.",
    ),
    "409": _json("ErrorBody", "`conflict`: the scan has already ended."),
    "413": _json(
        "ErrorBody", "`payload_too_large`: the body is over `SCANSTREAM_MAX_BODY` (default 64 KiB)."
    ),
    "422": _json("ErrorBody", "`invalid_request`: the detail names the offending field."),
    "503": _json(
        "ErrorBody",
        "`store_unavailable`: Redis cannot be reached; or `server_busy`: too many connections.",
        _RETRY_AFTER,
    ),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


def _server_answers(responses: dict[str, Any]) -> dict[str, Any]:
    """`responses` plus what the HTTP server answers to any request (where the operation
    does not describe that status already)."""
    for status, name in (
        ("400", "BadHttp"),
        ("408", "RequestTimeout"),
        ("431", "RequestHeaderTooLarge"),
        ("503", "ServerBusy"),
    ):
        responses.setdefault(status, {"$ref": RESPONSE_REF.format(name=name)})
    return responses


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _int(lo: int, hi: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi, "default": default}


SCAN_ID_SCHEMA = {"type": "string", "pattern": f"^{SCAN_ID_PATTERN}$"}
SCAN_ID = {
    "name": "scan_id",
    "in": "path",
    "required": True,
    "schema": SCAN_ID_SCHEMA,
    "description": "Anything else here is the unknown scan's `404`.",
}
ENTRY_ID = {
    "type": "string",
    "pattern": f"^{ENTRY_ID_PATTERN}$",
    "description": "A log entry id, as the log and the stream send them; `0-0` is the start.",
}


def _paths() -> dict[str, Any]:
    status_ok = {"200": _json("ScanStatus", "The scan's status.")}
    return {
        "/v1/scans": {
            "post": {
                "summary": "Start a scan",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY_PATTERN}$"},
                        "description": "The same key from the same user gives the same scan.",
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CreateScan")}},
                },
                "responses": {
                    "202": _json(
                        "ScanStatus",
                        "Accepted: the new scan's status.",
                        {"Location": {"schema": {"type": "string"}}},
                    ),
                    **_errors("400", "401", "413", "422", "503"),
                },
            },
            "get": {
                "summary": "The caller's scans, newest first",
                "parameters": [
                    _query("limit", _int(1, 100, 20), "Page size."),
                    _query("cursor", SCAN_ID_SCHEMA, "The `next` of the previous page."),
                ],
                "responses": {
                    "200": _json("ScanList", "A page of statuses."),
                    **_errors("401", "422", "503"),
                },
            },
        },
        "/v1/scans/{scan_id}": {
            "get": {
                "summary": "A scan's status",
                "parameters": [SCAN_ID],
                "responses": {**status_ok, **_errors("401", "404", "503")},
            }
        },
        "/v1/scans/{scan_id}/results": {
            "get": {
                "summary": "A scan's opportunities, best score first (partial while it runs)",
                "parameters": [
                    SCAN_ID,
                    _query(
                        "wait",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
                        "Hold the answer until the scan ends or this many seconds pass.",
                    ),
                ],
                "responses": {
                    "200": _json("ScanResults", "The results so far."),
                    "429": _json(
                        "ErrorBody",
                        "`rate_limited` (`?wait=` only): too many requests waiting for this "
                        "user or on this server.",
                        _RETRY_AFTER,
                    ),
                    **_errors("401", "404", "422", "503"),
                },
            }
        },
        "/v1/scans/{scan_id}/events": {
            "get": {
                "summary": "Server-Sent Events: the log replayed, then followed live",
                "description": "Each message is `id: <entry id>`, `event: <type>`, "
                "`data: <SseData>`. Replays from the start, or after `Last-Event-ID` / "
                "`?after=` (the header wins; `0-0` is the start; any other id must be an entry of "
                "this scan's stream); ends after the terminal scan event; a comment "
                "at least every 15 s. A client too slow to keep up is disconnected "
                "and resumes with `Last-Event-ID`.",
                "parameters": [
                    SCAN_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": ENTRY_ID,
                    },
                    _query(
                        "after",
                        ENTRY_ID,
                        "Resume after this entry id (checked even "
                        "when `Last-Event-ID` is sent, which wins).",
                    ),
                    _query(
                        "access_token",
                        {"type": "string"},
                        "A stream token of this scan (`POST .../stream-token`), for "
                        "EventSource; no other token is taken from the URL.",
                    ),
                ],
                "security": [{"bearer": []}, {"accessToken": []}],
                "responses": {
                    "200": {
                        "description": "An event stream: one message per log entry, in "
                        "stream order; comment lines between them keep it alive.",
                        "content": {"text/event-stream": {"itemSchema": _ref("SseMessage")}},
                    },
                    "204": {
                        "description": "Resumed after the terminal event: nothing more will "
                        "come (EventSource stops reconnecting)."
                    },
                    "400": _json(
                        "ErrorBody",
                        "`invalid_request`: the resume id is malformed or "
                        "not an entry of this scan's stream.",
                    ),
                    "429": _json(
                        "ErrorBody",
                        "`rate_limited`: too many event streams for this user or this server.",
                        _RETRY_AFTER,
                    ),
                    **_errors("401", "404", "503"),
                },
            }
        },
        "/v1/scans/{scan_id}/stream-token": {
            "post": {
                "summary": "A short-lived token for this scan's event stream only",
                "description": "For `GET /v1/scans/{scan_id}/events?access_token=` (a "
                "browser's EventSource cannot send headers). Refused on every other route, "
                "on every other scan, and after `expires_at` (`SCANSTREAM_STREAM_TOKEN_TTL`, "
                "default 60 s). Needs the caller's own token: a stream token makes none.",
                "parameters": [SCAN_ID],
                "responses": {
                    "200": _json("StreamToken", "The token and when it expires."),
                    **_errors("401", "404", "503"),
                },
            }
        },
        "/v1/scans/{scan_id}/log": {
            "get": {
                "summary": "The raw log, paged",
                "parameters": [
                    SCAN_ID,
                    _query("after", ENTRY_ID, "Entries after this id."),
                    _query("limit", _int(1, 1000, 100), "Page size."),
                ],
                "responses": {
                    "200": _json(
                        "LogPage", "Entries in stream order; `next` is set while more follow."
                    ),
                    "400": _json("ErrorBody", "`invalid_request`: `after` is not an entry id."),
                    **_errors("401", "404", "422", "503"),
                },
            }
        },
        "/v1/scans/{scan_id}/cancel": {
            "post": {
                "summary": "Cancel a scan",
                "parameters": [SCAN_ID],
                "responses": {
                    "202": _json("ScanStatus", "Cancelled: the scan's status."),
                    **_errors("401", "404", "409", "503"),
                },
            }
        },
        "/v1/strategies": {
            "get": {
                "summary": "Every available strategy",
                "responses": {
                    "200": _json("StrategyList", "Name and description of each."),
                    **_errors("401"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": _json("Health", "The process is up.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: Redis answers",
                "security": [],
                "responses": {"200": _json("Health", "Ready."), **_errors("503")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "description": "Open, unless the server sets SCANSTREAM_METRICS_TOKEN: then "
                "only `Authorization: Bearer <that token>` (not a user's token) is answered.",
                "security": [{}, {"metricsToken": []}],
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors("401"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "summary": "The dashboard page",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def build(strategies: Sequence[str] = ()) -> dict[str, Any]:
    """The document; `strategies` are the names this server runs (the enum of a scan's
    `strategies`)."""
    types: list[Any] = [
        ScanStatus,
        ScanResults,
        ScanList,
        LogPage,
        LogEvent,
        StrategyList,
        StreamToken,
        CreateScan,
        ErrorBody,
        Health,
        *EVENT_CLASSES,
    ]
    _, schemas = msgspec.json.schema_components(types, ref_template=REF)
    schemas["ScanStatus"]["properties"]["state"]["enum"] = list(get_args(ScanState))
    schemas["StrategyStatus"]["properties"]["state"]["enum"] = list(get_args(StrategyState))
    schemas["CreateScan"]["properties"]["strategies"] = {
        "description": "Names of strategies this server runs (`GET /v1/strategies`), each "
        "once; left out or null: all of them.",
        "anyOf": [
            {
                "type": "array",
                "items": {"enum": list(strategies)},
                "minItems": 1,
                "uniqueItems": True,
            },
            {"type": "null"},
        ],
    }
    schemas["SseData"] = {
        "description": "An event's data with `id`, `type` and `scan_id` added; `type` tells "
        "which event schema the rest follows. An unreadable entry carries its "
        "raw `data` as a string and a `problem`.",
        "allOf": [
            _ref("LogEvent"),
            {
                "anyOf": [_ref(cls.__name__) for cls in EVENT_CLASSES]
                + [
                    {
                        "type": "object",
                        "required": ["data", "problem"],
                        "properties": {"data": {"type": "string"}, "problem": {"type": "string"}},
                    }
                ]
            },
        ],
    }
    schemas["SseMessage"] = {
        "description": "One message of the event stream: a log entry.",
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": f"^{ENTRY_ID_PATTERN}$"},
            "event": {
                "type": "string",
                "pattern": f"^{SAFE_EVENT_NAME.pattern}$",
                "description": "The event's type (`invalid` for an entry whose type could "
                "break the framing; its data still has the real one).",
            },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref("SseData"),
            },
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    schemas["LogPage"]["properties"]["events"]["items"] = _ref("SseData")
    paths = _paths()
    for operations in paths.values():
        for operation in operations.values():
            _server_answers(operation["responses"])
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "scanstream",
            "version": "1",
            "description": "Long-running strategy scans; status and results are folds "
            "over one Redis Stream per scan. Every error is an `ErrorBody`. Any request may "
            "also be answered by the HTTP server itself, before the app: `400` (not "
            "HTTP/1.1), `408` (too slow), `431` (headers too large) or `503` (too many "
            "connections). A listed path with a method it does not list is `405` with "
            "`Allow`.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": SERVER_ANSWERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SCANSTREAM_METRICS_TOKEN, for /metrics only",
                },
            },
        },
    }


@functools.cache
def openapi_json(strategies: tuple[str, ...] = ()) -> bytes:
    return msgspec.json.encode(build(strategies))
