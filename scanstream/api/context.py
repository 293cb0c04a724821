"""What every handler needs, built once in the lifespan and handed over as typed state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import HTTPConnection

from scanstream.api.metrics import ApiMetrics
from scanstream.projection_cache import ProjectionCache
from scanstream.service import ScanService
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.events import EventStore


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    secrets: tuple[str, ...]  # the first signs, all verify
    metrics: ApiMetrics
    store: EventStore
    cache: ProjectionCache
    service: ScanService
    storage: Storage  # the Redis behind it all, on short commands only (readiness pings it)
    strategies_json: bytes  # `GET /v1/strategies`, encoded once


def context(conn: HTTPConnection) -> ApiContext:
    # The lifespan's state dict, read directly: `conn.state` builds a State object per
    # request, and this runs on every request.
    return cast(ApiContext, conn.scope["state"]["ctx"])
