"""A bench-only entry point: patch one thing inside the process, then run the real CLI.

    python -m bench.variant [--socket-timeout S] [--health-check-interval S]
                            [--rebuild-per-request] [--log-level LEVEL]
                            [--single-xrange-status] [--no-metrics-middleware]
                            [--status-route-first] [--plain-http] -- api|worker ...

It lets the benchmarks measure alternatives without editing scanstream:
- `--socket-timeout S` / `--health-check-interval S`: every client that
  `scanstream.storage.connection.client` builds gets these instead (redis-py 8's own default
  socket timeout is 5 s; scanstream ships None and 30);
- `--rebuild-per-request`: the projection cache forgets the scan before every read, so
  each status request reads the whole log and folds it (the design the cache replaces);
- `--log-level LEVEL`: `scanstream.logs.configure` sets this root level instead of INFO
  (before issue 11 the worker logged each attempt's start at INFO);
- `--isolation MODE`: the worker runs strategies `thread` (as shipped), `process` or
  `inline` (on its own loop, as before issue 8);
- `--legacy-client`: the Redis client as before issue 8 (a pool that fails when full,
  redis-py's default ten retries), to price the single re-send and the waiting pool;
- `--plain-http`: the API served by uvicorn's own httptools protocol, as before issue 10's
  HTTP limits (no header limit, read timeouts or connection cap), to price them.

What-if patches of the status path (`python -m bench --explore`), each a change the
benchmarks suggest, measured before anyone makes it:
- `--single-xrange-status`: `EventStore.read_if_exists` sends one `XRANGE key <after> +`
  (inclusive) instead of a pipeline of `EXISTS` + exclusive `XRANGE`: a scan's stream is
  never trimmed nor has entries deleted, so an empty answer means it is gone;
- `--no-metrics-middleware`: the API's `MetricsMiddleware` passes requests straight through;
- `--status-route-first`: `GET /v1/scans/{scan_id}` is the first route tried, not the 7th.

Then `scanstream.cli.main(args)` runs exactly what `python -m scanstream args` runs
(`api --workers 1` serves in this very process, so the patches hold).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _patch_client(socket_timeout: float | None, health_check_interval: float | None) -> None:
    from scanstream.storage import connection

    original = connection.client

    def client(url: str, *args: Any, **kwargs: Any) -> Any:
        made = original(url, *args, **kwargs)
        conn_kwargs = made.connection_pool.connection_kwargs
        if socket_timeout is not None:
            conn_kwargs["socket_timeout"] = socket_timeout if socket_timeout > 0 else None
        if health_check_interval is not None:
            conn_kwargs["health_check_interval"] = health_check_interval
        return made

    connection.client = client  # `Storage.connect` looks it up at each call: patched too


def _patch_rebuild() -> None:
    from scanstream.projection_cache import ProjectionCache

    original = ProjectionCache.get

    async def get(self: ProjectionCache, scan_id: str) -> Any:
        self.forget(scan_id)
        return await original(self, scan_id)

    ProjectionCache.get = get  # type: ignore[method-assign]


def _patch_log_level(level: str) -> None:
    import logging

    from scanstream import logs

    original = logs.configure
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise SystemExit(f"--log-level: unknown level {level!r}")

    def configure(log_format: str = "text", level: int = logging.INFO) -> None:
        original(log_format, value)

    logs.configure = configure


def _patch_single_xrange() -> None:
    from scanstream.storage import events as store
    from scanstream.storage.errors import store_errors
    from scanstream.storage.replies import entries

    async def read_if_exists(
        self: store.EventStore, scan_id: str, after: str | None
    ) -> list[Any] | None:
        key = self.keys.events(scan_id)
        async with store_errors():
            raw = await self.redis.xrange(key, after or "-", "+")
        if not raw:
            return None  # the stream is gone: it always holds at least scan.requested
        if after is not None:
            first = raw[0][0]
            if (first.decode() if isinstance(first, bytes) else first) == after:
                raw = raw[1:]
        return entries(raw)

    store.EventStore.read_if_exists = read_if_exists  # type: ignore[method-assign]


def _patch_no_metrics() -> None:
    from scanstream.api import metrics

    async def passthrough(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    metrics.MetricsMiddleware.__call__ = passthrough  # type: ignore[method-assign]


def _patch_route_first() -> None:
    from scanstream.api import app as api_app

    original = api_app.create_app

    def create_app(settings: Any, **kwargs: Any) -> Any:
        made = original(settings, **kwargs)
        routes = made.router.routes
        first = [r for r in routes if getattr(r, "path", "") == "/v1/scans/{scan_id}"]
        routes[:] = first + [r for r in routes if r not in first]
        return made

    api_app.create_app = create_app


def _patch_legacy_client() -> None:
    """The client as it was before issue 8: a pool that fails when full ("Too many
    connections") and redis-py's default retries (10, with backoff), for a before/after."""
    from redis.asyncio import Redis

    from scanstream.storage import connection

    def client(url: str, *, max_connections: int = 64, cluster: bool = False) -> Redis:
        if cluster:
            raise SystemExit("--legacy-client: a single Redis only (no cluster client then)")
        return Redis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=connection.CONNECT_TIMEOUT_S,
            socket_timeout=None,
            socket_keepalive=True,
            health_check_interval=30,
            max_connections=max_connections,
        )

    connection.client = client  # type: ignore[assignment]


def _patch_plain_http() -> None:
    from scanstream.api import serving

    def uvicorn_options(settings: Any) -> dict[str, Any]:
        return {"http": "httptools"}  # what `scanstream api` passed before

    serving.uvicorn_options = uvicorn_options  # `scanstream api` imports it at call time


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: python -m bench.variant [patches] -- api|worker ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m bench.variant")
    p.add_argument(
        "--socket-timeout",
        type=float,
        default=None,
        help="seconds; 0 means None (no per-read timeout)",
    )
    p.add_argument("--health-check-interval", type=float, default=None)
    p.add_argument("--rebuild-per-request", action="store_true")
    p.add_argument("--log-level", default=None)
    p.add_argument("--single-xrange-status", action="store_true")
    p.add_argument("--no-metrics-middleware", action="store_true")
    p.add_argument("--status-route-first", action="store_true")
    p.add_argument("--isolation", choices=("thread", "process", "inline"), default=None)
    p.add_argument("--legacy-client", action="store_true")
    p.add_argument("--plain-http", action="store_true")
    args = p.parse_args(argv[:split])
    if args.isolation:
        os.environ["SCANSTREAM_ISOLATION"] = args.isolation
    if args.legacy_client:
        _patch_legacy_client()
    if args.socket_timeout is not None or args.health_check_interval is not None:
        _patch_client(args.socket_timeout, args.health_check_interval)
    if args.rebuild_per_request:
        _patch_rebuild()
    if args.log_level:
        _patch_log_level(args.log_level)
    if args.single_xrange_status:
        _patch_single_xrange()
    if args.no_metrics_middleware:
        _patch_no_metrics()
    if args.status_route_first:
        _patch_route_first()
    if args.plain_http:
        _patch_plain_http()
    from scanstream.cli import main as scanstream_main

    return scanstream_main(argv[split + 1 :])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
