"""The OpenAPI 3.1 document, built from the same msgspec Structs the API encodes."""

from __future__ import annotations

import functools
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
from scanstream.projection import ScanState, StrategyState
from scanstream.render import ScanResults, ScanStatus

REF = "#/components/schemas/{name}"
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
ERRORS: dict[str, dict[str, Any]] = {
    "400": _json("ErrorBody", "`invalid_request`: the body is not JSON."),
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
    "413": _json("ErrorBody", "`payload_too_large`: the body is over 64 KiB."),
    "422": _json("ErrorBody", "`invalid_request`: the detail names the offending field."),
    "503": _json("ErrorBody", "`store_unavailable`: Redis cannot be reached.", _RETRY_AFTER),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


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


SCAN_ID = {
    "name": "scan_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^scan_[0-9a-f]{32}$"},
}
STREAM_ID = {"type": "string", "pattern": r"^\d+-\d+$"}


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
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
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
                    _query("cursor", {"type": "string"}, "The `next` of the previous page."),
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
                        "schema": STREAM_ID,
                    },
                    _query("after", STREAM_ID, "Resume after this entry id."),
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
                        "description": "An event stream.",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "x-message-data": _ref("SseData"),
                            }
                        },
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
                    _query("after", STREAM_ID, "Entries after this id."),
                    _query("limit", _int(1, 1000, 100), "Page size."),
                ],
                "responses": {
                    "200": _json(
                        "LogPage", "Entries in stream order; `next` is set while more follow."
                    ),
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


def build() -> dict[str, Any]:
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
    schemas["LogPage"]["properties"]["events"]["items"] = _ref("SseData")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scanstream",
            "version": "1",
            "description": "Long-running strategy scans; status and results are folds "
            "over one Redis Stream per scan.",
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
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
def openapi_json() -> bytes:
    return msgspec.json.encode(build())
