"""`scanstream dev`: an embedded Redis, the API and a worker in one process, plus a demo scan."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
from pathlib import Path

import anyio

from scanstream import logs
from scanstream.embedded import RedisProcess, free_port
from scanstream.settings import Settings

log = logging.getLogger("scanstream.dev")
DEMO_USER = "demo"


def _secret(data_dir: Path) -> str:
    """A secret kept in the data folder, so tokens stay valid across dev runs."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_dev(args: argparse.Namespace) -> int:
    if not _port_free(args.host, args.port):
        taken = args.port
        args.port = free_port()
        print(f"port {taken} is in use; serving on {args.port} instead (choose one with --port)")
    settings = Settings.from_env()
    logs.configure(settings.log_format, level=logging.WARNING)
    data_dir = Path(settings.data_dir).resolve()
    redis: RedisProcess | None = None
    if not settings.redis_url:
        redis = RedisProcess(data_dir=data_dir / "redis").start()
        print(f"embedded redis-server on {redis.url} (AOF in {redis.data_dir})")
        settings = settings.with_(redis_url=redis.url)
    settings = settings.with_(secret=settings.secret or _secret(data_dir))
    os.environ["SCANSTREAM_REDIS_URL"] = settings.redis_url or ""
    os.environ["SCANSTREAM_SECRET"] = settings.secret or ""
    # SIGTERM ends dev like Ctrl-C does, so the embedded Redis is always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return anyio.run(_serve, settings, args, backend_options={"use_uvloop": True})
    except KeyboardInterrupt:
        return 0
    finally:
        if redis is not None:
            redis.stop()


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from consumers.worker import Worker
    from scanstream.api.app import create_app
    from scanstream.api.auth import make_token
    from scanstream.market import market_for, parse_params
    from scanstream.strategies.registry import load_strategies

    strategies = load_strategies(settings.strategy_modules)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    token = make_token(settings.secret or "", DEMO_USER)
    base = f"http://{args.host}:{args.port}"
    exit_code = 0
    server_done = anyio.Event()

    async def serve_api() -> None:
        try:
            await server.serve()  # returns on Ctrl-C / SIGTERM or when told to exit
        finally:
            server_done.set()

    workers = [
        Worker(
            settings,
            strategies,
            lambda p: market_for(parse_params(dict(p))),
            concurrency=args.concurrency,
        )
        for _ in range(max(1, args.workers))
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        tg.start_soon(serve_api)
        while not server.started and not server_done.is_set():
            await anyio.sleep(0.05)
        if server_done.is_set():
            raise SystemExit(f"the API could not start on {base}")
        print(f"\nscanstream is running: API {base}, {len(strategies)} strategies")
        print(f"dashboard: {base}/#token={token}")
        print(f"token for user {DEMO_USER!r}: export SCANSTREAM_TOKEN={token}\n")
        if not args.no_demo:
            exit_code = await anyio.to_thread.run_sync(_demo, base, token)
            if args.exit_after_demo:
                server.should_exit = True
            else:
                print(f"\nstill serving: dashboard {base}/#token={token} (Ctrl-C stops)")
        await server_done.wait()
        for worker in workers:
            await worker.drain(grace_s=5.0)
    return exit_code


def _demo(base: str, token: str) -> int:
    from scanstream.client import ApiClient
    from scanstream.terminal import watch

    client = ApiClient(base, token)
    status = client.start(None, {"pace_ms": 120})
    print(f"demo scan {status['scan_id']} started; watching it live:")
    return watch(client, status["scan_id"])
