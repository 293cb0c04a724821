"""The `scanstream` command: dev, api, worker, token, scan, replay, inspect."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from scanstream.errors import ScanstreamError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scanstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="everything on one machine: embedded Redis, API, workers")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--workers", type=int, default=1, help="in-process workers")
    dev.add_argument("--concurrency", type=int, default=8)
    dev.add_argument("--no-demo", action="store_true", help="do not start a demo scan")
    dev.add_argument(
        "--exit-after-demo",
        action="store_true",
        help="stop once the demo scan has finished (for scripted checks)",
    )

    api = sub.add_parser("api", help="the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="API processes")

    worker = sub.add_parser("worker", help="a strategy consumer process")
    worker.add_argument("--concurrency", type=int, default=8)
    worker.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds running strategies get to finish on SIGTERM",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at :PORT/metrics (default: off)",
    )

    token = sub.add_parser("token", help="print a bearer token for USER_ID")
    token.add_argument("user_id")

    scan = sub.add_parser("scan", help="a terminal client of the API")
    scan.add_argument("--api", default=None, help="API URL (env SCANSTREAM_API_URL)")
    scan.add_argument("--token", default=None, help="bearer token (env SCANSTREAM_TOKEN)")
    scan_sub = scan.add_subparsers(dest="scan_command", required=True)
    start = scan_sub.add_parser("start", help="start a scan")
    start.add_argument(
        "--strategy",
        "-s",
        action="append",
        dest="strategies",
        help="a strategy to run (repeat); default: all",
    )
    start.add_argument("--params", default="{}", help="params as a JSON object")
    start.add_argument("--idempotency-key", default=None)
    start.add_argument("--watch", action="store_true", help="watch it live until it ends")
    for name in ("status", "results", "watch", "cancel"):
        one = scan_sub.add_parser(name, help=f"{name} of a scan")
        one.add_argument("scan_id")
        if name == "results":
            one.add_argument(
                "--wait", type=float, default=None, help="hold up to S seconds for the end"
            )
    scan_sub.add_parser("list", help="your scans, newest first")

    sub.add_parser("replay", help="replay tooling (see `scanstream replay --help`)", add_help=False)
    sub.add_parser("inspect", help="consumer groups, pending jobs, dead letters", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # replay and inspect own their argument parsing.
    if args_list and args_list[0] == "replay":
        from scanstream.replay.cli import main as replay_main

        return replay_main(args_list[1:])
    if args_list and args_list[0] == "inspect":
        from scanstream.inspect import main as inspect_main

        return inspect_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        return _dispatch(args)
    except ScanstreamError as exc:
        print(f"scanstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from scanstream.settings import Settings

    if args.command == "token":
        from scanstream.api.auth import make_token
        from scanstream.errors import ConfigError
        from scanstream.ids import is_user_id

        settings = Settings.from_env()
        if not settings.secret:
            raise ConfigError("SCANSTREAM_SECRET is not set")
        if not is_user_id(args.user_id):
            raise ConfigError("USER_ID must be 1-64 characters of letters, digits and _.@:-")
        print(make_token(settings.secret, args.user_id))
        return 0
    if args.command == "api":
        return _api(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "dev":
        from scanstream.dev import run_dev

        return run_dev(args)
    if args.command == "scan":
        return _scan(args)
    raise AssertionError(args.command)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from scanstream.errors import ConfigError
    from scanstream.settings import Settings

    settings = Settings.from_env()
    if not settings.secret:
        raise ConfigError("SCANSTREAM_SECRET is not set: the API refuses to start without it")
    if not settings.redis_url:
        raise ConfigError("SCANSTREAM_REDIS_URL is not set (only `scanstream dev` embeds a Redis)")
    uvicorn.run(
        "scanstream.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    import anyio

    from consumers.worker import serve
    from scanstream import logs
    from scanstream.errors import ConfigError
    from scanstream.settings import Settings

    settings = Settings.from_env()
    if not settings.redis_url:
        raise ConfigError("SCANSTREAM_REDIS_URL is not set (only `scanstream dev` embeds a Redis)")
    logs.configure(settings.log_format)
    anyio.run(
        serve,
        settings,
        args.concurrency,
        args.grace,
        args.metrics_port,
        backend_options={"use_uvloop": True},
    )
    return 0


def _scan(args: argparse.Namespace) -> int:
    from scanstream.client import ApiClient, ApiError

    client = ApiClient(args.api, args.token)
    try:
        if args.scan_command == "start":
            try:
                params: dict[str, Any] = json.loads(args.params)
            except json.JSONDecodeError as exc:
                print(f"scanstream: --params is not JSON: {exc}", file=sys.stderr)
                return 2
            status = client.start(args.strategies, params, args.idempotency_key)
            if args.watch:
                from scanstream.terminal import watch

                return watch(client, status["scan_id"])
            _print(status)
        elif args.scan_command == "status":
            _print(client.status(args.scan_id))
        elif args.scan_command == "results":
            _print(client.results(args.scan_id, args.wait))
        elif args.scan_command == "cancel":
            _print(client.cancel(args.scan_id))
        elif args.scan_command == "list":
            _print(client._call("GET", "/v1/scans"))
        elif args.scan_command == "watch":
            from scanstream.terminal import watch

            return watch(client, args.scan_id)
    except ApiError as exc:
        print(f"scanstream: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(body: Any) -> None:
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
