"""The ASGI application: `create_app(settings)`, and `app_from_env()` for `uvicorn --factory`.

The Redis clients are created in the lifespan and closed on shutdown. Start-up never
needs Redis to answer: the app starts anyway, `/readyz` says 503 until Redis is back,
and every other route answers `503 store_unavailable` meanwhile.

Two Redis clients per process, whatever the load: the hot pool for short commands (every
request's Redis work is bounded by `SCANSTREAM_REQUEST_TIMEOUT`), and the fan-out's one
connection for its tail reader, which every SSE stream and every `results?wait=`
long-poll rides.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from scanstream.api import routes_events, routes_ops, routes_scans, routes_tokens, routes_web
from scanstream.api.bodies import StrategyInfo, StrategyList
from scanstream.api.context import ApiContext
from scanstream.api.errors import EXCEPTION_HANDLERS
from scanstream.api.metrics import ApiMetrics, MetricsMiddleware
from scanstream.api.shutdown import on_exit_signal
from scanstream.deadline import Deadline
from scanstream.errors import ConfigError
from scanstream.limits import ScanLimits
from scanstream.live.fanout import Fanout
from scanstream.live.metrics import FanoutCollector
from scanstream.projection_cache import ProjectionCache
from scanstream.service import ParamsValidator, ScanService
from scanstream.settings import Settings
from scanstream.storage.connection import Storage

log = logging.getLogger("scanstream.api")

# Connections for short commands. Past it a command waits for a free one (bounded by
# the request deadline); nothing on a request path holds one for long.
HOT_POOL_SIZE = 256


def _load_strategies(settings: Settings) -> Mapping[str, Any]:
    from scanstream.strategies.registry import load_strategies  # built by another module

    return load_strategies(settings.strategy_modules)


def _params_validator(settings: Settings) -> ParamsValidator:
    # The market part (`scanstream.market.parse_params`) and each chosen strategy's
    # knobs (`params.<strategy>.<knob>`), so a bad value is a 422 now, not a failed job.
    from scanstream.strategies.registry import check_params

    return functools.partial(check_params, csv_settings=settings.csv)


def _check(settings: Settings) -> tuple[tuple[str, ...], str]:
    if not settings.secret:
        raise ConfigError(
            "SCANSTREAM_SECRET is not set: the API signs and checks bearer tokens with it. "
            "Set it to a long random string (or run `scanstream dev`, which makes one)."
        )
    if not settings.redis_url:
        raise ConfigError(
            "SCANSTREAM_REDIS_URL is not set: the API needs a Redis (redis://, rediss:// or "
            "unix://). `scanstream dev` starts an embedded one and sets it for its children."
        )
    return settings.secrets, settings.redis_url


def create_app(settings: Settings, *, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The API. `extra_routes` are mounted before the `/v1/scans/...` catch-all 404
    (the SSE route and the dashboard go there)."""
    secrets, url = _check(settings)
    strategies = _load_strategies(settings)
    validate_params = _params_validator(settings)
    strategies_json = msgspec.json.encode(
        StrategyList(
            strategies=[
                StrategyInfo(name=s.name, description=s.description) for s in strategies.values()
            ]
        )
    )
    metrics = ApiMetrics()
    live = Fanout(settings)  # one tail reader: SSE and long-polls
    metrics.registry.register(FanoutCollector(live))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, ApiContext]]:
        storage = Storage.connect(settings, url=url, max_connections=HOT_POOL_SIZE)
        store = storage.events
        cache = ProjectionCache(store, max_bytes=settings.projection_cache_bytes)
        service = ScanService(
            store=store,
            cache=cache,
            index=storage.index,
            jobs=storage.jobs,
            strategies=list(strategies),
            validate_params=validate_params,
            deadline=Deadline(settings.request_timeout_s),
            live=live,
            quotas=storage.quotas,
            limits=ScanLimits(settings.max_params_bytes, settings.max_scan_cost),
            works={s.name: s.work for s in strategies.values()},
        )
        await service.prepare()  # tolerates a Redis that is down: retried on first create
        metrics.cache = cache
        ctx = ApiContext(
            settings=settings,
            secrets=secrets,
            metrics=metrics,
            store=store,
            cache=cache,
            service=service,
            storage=storage,
            strategies_json=strategies_json,
        )
        await live.start(storage.tail_reader(), store)
        try:
            # SIGINT / SIGTERM end every SSE stream and long-poll at once, so uvicorn's
            # graceful shutdown (which waits for open responses) is not held up by them.
            with on_exit_signal(live.shutdown):
                yield {"ctx": ctx}
        finally:
            await live.stop()
            await storage.aclose()

    app = Starlette(
        # Scan routes first: starlette tries routes in order, and status is the hot path.
        routes=[
            *routes_scans.ROUTES,
            *routes_events.ROUTES,
            *routes_tokens.ROUTES,
            *routes_ops.ROUTES,
            *extra_routes,
            *routes_scans.CATCH_ALL,
            *routes_web.ROUTES,
        ],
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.live = live
    app.state.strategy_names = tuple(strategies)  # /openapi.json's enum of them
    return app


def app_from_env() -> Starlette:
    """`uvicorn --factory scanstream.api.app:app_from_env`: settings from SCANSTREAM_*."""
    return create_app(Settings.from_env())
