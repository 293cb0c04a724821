"""The `scanstream` command: dev, api, worker, token, scan, replay, inspect."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from scanstream.errors import ScanstreamError
from scanstream.redact import redact
from scanstream.settings import ISOLATION_MODES

if TYPE_CHECKING:
    from scanstream.client import ApiClient
    from scanstream.settings import Settings


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
    worker.add_argument(
        "--isolation",
        choices=ISOLATION_MODES,
        default=None,
        help="where strategy code runs (env SCANSTREAM_ISOLATION, default thread): a thread, "
        "a pre-started process per slot, or inline on the worker's own loop",
    )

    token = sub.add_parser("token", help="print a bearer token for USER_ID")
    token.add_argument("user_id")
    token.add_argument(
        "--ttl",
        metavar="SECONDS",
        default=None,
        help="how long it is good for, in whole seconds (env SCANSTREAM_TOKEN_TTL, "
        "default 86400: one day)",
    )

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
    """Run one command. Whatever goes wrong ends as one line on stderr and an exit code
    (1: the API failed or refused, 2: bad input or configuration, 130: Ctrl-C), never as
    a traceback."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130


def _main(args_list: list[str]) -> int:
    # replay and inspect own their argument parsing.
    if args_list and args_list[0] == "replay":
        from scanstream.replay.cli import main as replay_main

        return replay_main(args_list[1:])
    if args_list and args_list[0] == "inspect":
        from scanstream.inspect import main as inspect_main

        return inspect_main(args_list[1:])
    args = _parser().parse_args(args_list)
    from scanstream.client import ClientError

    try:
        return _dispatch(args)
    except ClientError as exc:
        print(f"scanstream: {redact(str(exc))}", file=sys.stderr)
        return 1
    except ScanstreamError as exc:
        print(f"scanstream: {redact(str(exc))}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from scanstream.settings import Settings

    if args.command == "token":
        return _token(args, Settings.from_env())
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


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from scanstream.api.auth import MAX_TTL_S, issue, rfc3339
    from scanstream.devdir import read_secret
    from scanstream.errors import ConfigError
    from scanstream.ids import is_user_id

    if not is_user_id(args.user_id):
        raise ConfigError("USER_ID must be 1-64 characters of letters, digits and _.@:-")
    ttl_s = settings.token_ttl_s if args.ttl is None else _ttl(args.ttl, MAX_TTL_S)
    secret = settings.secret
    if not secret:
        # Beside a `scanstream dev`, in the folder it runs in: sign with the secret it
        # serves with, so the README's commands work in a fresh shell.
        secret, path = read_secret(settings)
        if not secret:
            raise ConfigError(
                f"SCANSTREAM_SECRET is not set, and there is no dev secret in {path} "
                "(`scanstream dev` makes one there)"
            )
        print(
            f"scanstream: SCANSTREAM_SECRET is not set; signed with the dev secret in {path}",
            file=sys.stderr,
        )
    token, expires_at = issue(secret, args.user_id, ttl_s)
    print(
        f"scanstream: a token for {args.user_id}, good until {rfc3339(expires_at)}", file=sys.stderr
    )
    print(token)
    return 0


def _ttl(raw: str, most: int) -> int:
    from scanstream.errors import ConfigError

    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 1 <= value <= most or value != int(value):
        raise ConfigError(f"--ttl must be a whole number of seconds from 1 to {most}, got {raw!r}")
    return int(value)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from scanstream.api.serving import fit_open_files, uvicorn_options
    from scanstream.errors import ConfigError
    from scanstream.settings import Settings

    settings = Settings.from_env()
    if not settings.secret:
        raise ConfigError("SCANSTREAM_SECRET is not set: the API refuses to start without it")
    if not settings.redis_url:
        raise ConfigError("SCANSTREAM_REDIS_URL is not set (only `scanstream dev` embeds a Redis)")
    fit_open_files(settings)
    uvicorn.run(
        "scanstream.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        # httptools with the header, timeout and connection limits (scanstream.api.protocol)
        **uvicorn_options(settings),
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
    if args.isolation:
        settings = settings.with_(isolation=args.isolation)
    logs.configure(settings.log_format, settings.log_level)
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
    from scanstream.client import ApiClient
    from scanstream.errors import ConfigError

    params: dict[str, Any] = {}
    if args.scan_command == "start":
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--params is not JSON: {exc}") from None
    client = ApiClient(args.api, args.token)
    if args.scan_command == "start":
        status = client.start(args.strategies, params, args.idempotency_key)
        if args.watch:
            return _watch(client, status["scan_id"])
        _print(status)
    elif args.scan_command == "status":
        _print(client.status(args.scan_id))
    elif args.scan_command == "results":
        _print(client.results(args.scan_id, args.wait))
    elif args.scan_command == "cancel":
        _print(client.cancel(args.scan_id))
    elif args.scan_command == "list":
        _print(client.list())
    elif args.scan_command == "watch":
        return _watch(client, args.scan_id)
    return 0


def _watch(client: ApiClient, scan_id: str) -> int:
    from scanstream.terminal import watch

    try:
        return watch(client, scan_id)
    except KeyboardInterrupt:
        print(f"\nstopped watching; {scan_id} goes on (`scanstream scan status {scan_id}`)")
        return 130


def _print(body: Any) -> None:
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
