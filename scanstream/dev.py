"""`scanstream dev`: an embedded Redis, the API and a worker in one process, plus a demo scan.

Starting is simple; stopping is where a dev server annoys people, so it is spelled out:

- One `dev` per data folder (`scanstream.devdir`): a second one says which pid holds the
  folder and exits 1, instead of running a second redis-server on the same AOF.
- Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal) all stop it the same way, in
  order, within `STOP_S`: the demo stops watching; the API stops accepting and ends every
  open event stream and long poll (a dashboard tab or `scan watch` following a running
  scan would otherwise hold uvicorn's shutdown for as long as the scan runs); workers get
  `WORKER_GRACE_S` to finish running strategies (the rest stay pending and are reclaimed
  by the next run); last, Redis gets SIGTERM so it flushes its AOF. Whatever is still
  running at the deadline (a slow request, a strategy that ignores cancellation) is
  cancelled, and so is everything at a second signal; requests cut short that way are
  not logged as errors. uvicorn's signal handlers are left out: one handler here decides
  the order. A signal ignored when dev starts stays ignored (`nohup scanstream dev &`
  survives its terminal).
- SIGKILL cannot be handled: the embedded Redis is started `die_with_owner`, so the kernel
  stops it anyway (`scanstream.embedded`).

Exit code: 128 + the signal's number when a signal stopped it (130 for Ctrl-C); with
`--exit-after-demo`, the demo's (0 when its scan completed); 1 when it could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from anyio import from_thread, lowlevel
from anyio.abc import TaskGroup

from scanstream import logs
from scanstream.devdir import AlreadyRunning, dev_secret, only_dev_in
from scanstream.embedded import RedisProcess, free_port
from scanstream.redact import redact, redact_url
from scanstream.settings import Settings

if TYPE_CHECKING:
    from consumers.worker import Worker

log = logging.getLogger("scanstream.dev")
DEMO_USER = "demo"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_S = 3.0  # a stop signal -> API and workers down, or cancelled (Redis's stop follows)
WORKER_GRACE_S = 2.0  # running strategies get this long to finish
REDIS_STOP_S = 3.0  # then Redis is killed instead


def run_dev(args: argparse.Namespace) -> int:
    # a signal ignored when dev starts (nohup, a background job) stays ignored
    args.stop_signals = [s for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN]
    settings = Settings.from_env()
    logs.configure(settings.log_format, level=logging.WARNING)
    data_dir = Path(settings.data_dir).resolve()
    try:
        with only_dev_in(data_dir):
            return _run(args, settings, data_dir)
    except AlreadyRunning as exc:
        print(f"scanstream: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings, data_dir: Path) -> int:
    _interrupt_on(args.stop_signals)  # until the event loop takes over, and again after it
    redis: RedisProcess | None = None
    try:
        if not _port_free(args.host, args.port):
            taken, args.port = args.port, free_port()
            print(f"port {taken} is in use; serving on {args.port} instead (choose with --port)")
        if not settings.redis_url:
            redis = RedisProcess(data_dir=data_dir / "redis", die_with_owner=True).start()
            print(f"embedded redis-server on {redact_url(redis.url)} (AOF in {redis.data_dir})")
            settings = settings.with_(redis_url=redis.url)
        settings = settings.with_(secret=settings.secret or dev_secret(settings))
        os.environ["SCANSTREAM_REDIS_URL"] = settings.redis_url or ""
        os.environ["SCANSTREAM_SECRET"] = ",".join(settings.secrets)
        return anyio.run(_serve, settings, args, backend_options={"use_uvloop": True})
    except KeyboardInterrupt:  # a signal before the loop's own handler was in place
        return 130
    finally:
        _interrupt_on(args.stop_signals)  # the loop's handlers are gone: SIGHUP would kill us
        if redis is not None:
            _stop_redis(redis)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupt_on(signals: list[int]) -> None:
    for signum in signals:
        signal.signal(signum, _interrupt)


def _stop_redis(redis: RedisProcess) -> None:
    try:
        redis.stop(timeout_s=REDIS_STOP_S)
    except KeyboardInterrupt:  # another Ctrl-C while Redis flushes: stop waiting for it
        redis.kill()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _say(text: str, *, err: bool = False) -> None:
    """Print, unless the terminal is gone (after SIGHUP): stopping must not fail on it."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: `_Dev` has the one handler, which stops the
    API, the workers and Redis in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    return await _Dev(settings, args).run()


class _Dev:
    tg: TaskGroup

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        from consumers.worker import Worker
        from scanstream.api.app import create_app
        from scanstream.api.auth import issue
        from scanstream.api.serving import uvicorn_options
        from scanstream.market import load_market
        from scanstream.strategies.registry import load_strategies

        self.args = args
        self.strategies = load_strategies(settings.strategy_modules)
        self.app = create_app(settings)
        self.server = _Server(
            uvicorn.Config(
                self.app,
                host=args.host,
                port=args.port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                **uvicorn_options(settings),  # served as `scanstream api` serves
            )
        )
        self.workers = [
            Worker(
                settings,
                self.strategies,
                lambda p: load_market(p, settings.csv),
                concurrency=args.concurrency,
            )
            for _ in range(max(1, args.workers))
        ]
        self.base = f"http://{args.host}:{args.port}"
        # The link's token is the sign-in token itself, with the usual lifetime: it sits in
        # the fragment, which the browser never sends, and the page takes it out at once.
        self.token, self.token_expires = issue(
            settings.secret or "", DEMO_USER, settings.token_ttl_s
        )
        self.stopping = anyio.Event()  # a signal, the demo's end with --exit-after-demo, ...
        self.api_done = anyio.Event()
        self.demo_stop = threading.Event()  # tells the demo's thread to stop watching
        self.signum: int | None = None
        self.starting = anyio.CancelScope()  # a signal while starting up cuts it short
        self.patience: anyio.CancelScope | None = None  # the graceful part of stopping
        self.running: list[Worker] = []  # the workers that started
        self.api_started = False
        self.exit_code = self.demo_code = 0

    async def run(self) -> int:
        async with anyio.create_task_group() as tg:
            self.tg = tg
            await tg.start(self._signals)
            with self.starting:
                await self._start(tg)
            await self.stopping.wait()
            await self._stop()
            tg.cancel_scope.cancel()
        return 128 + self.signum if self.signum is not None else self.exit_code

    async def _start(self, tg: TaskGroup) -> None:
        for worker in self.workers:
            await tg.start(worker.run)  # waits for Redis, if it is not there yet
            self.running.append(worker)
        tg.start_soon(self._serve_api)
        self.api_started = True
        while not (self.server.started or self.api_done.is_set()):
            await anyio.sleep(0.05)
        if not self.server.started:  # uvicorn said why on stderr
            _say(f"scanstream: the API could not start on {self.base}", err=True)
            self.exit_code = 1
            self.stopping.set()
            return
        self._banner()
        if not self.args.no_demo:
            tg.start_soon(self._demo)

    async def _signals(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with anyio.open_signal_receiver(*self.args.stop_signals) as signals:
                task_status.started()
                async for signum in signals:
                    self._on_signal(signum)
        finally:
            # Closing the receiver put the default actions back, and a Ctrl-C now would
            # kill dev on the spot, before it stops Redis.
            _interrupt_on(self.args.stop_signals)

    def _on_signal(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            _say("\nstopping (Ctrl-C again to stop at once)", err=True)
            self.starting.cancel()
            self.stopping.set()
        elif self.patience is not None:  # the impatient second Ctrl-C
            self.patience.cancel()
        else:  # between starting and stopping: nothing to wait for yet
            self._force()
            self.tg.cancel_scope.cancel()

    async def _serve_api(self) -> None:
        try:
            await self.server.serve()  # returns once told to exit, or when it cannot bind
        except SystemExit:  # uvicorn's answer to a port it cannot bind, after logging why
            pass
        finally:
            self.api_done.set()

    async def _stop(self) -> None:
        """The API and the workers down, in parallel, within STOP_S; what is still running
        then (or at a second signal) is cancelled when `run` leaves its task group."""
        self.demo_stop.set()
        # Every SSE stream and long poll ends now, and any that arrives from now on at once
        # (the client resumes elsewhere): uvicorn's graceful shutdown waits for open
        # responses, and a dashboard tab following a running scan would hold it as long
        # as the scan runs. Ended with a comment saying why, they close cleanly.
        self.app.state.live.shutdown()
        self.server.should_exit = True
        if not self.api_started:
            self.api_done.set()
        with anyio.move_on_after(STOP_S) as self.patience:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.api_done.wait)
                for worker in self.running:
                    tg.start_soon(worker.drain, WORKER_GRACE_S)
        if not self.api_done.is_set():
            self._force()
            with anyio.move_on_after(0.5):
                await self.api_done.wait()

    def _force(self) -> None:
        """Stop uvicorn without waiting for open requests. They (and its lifespan's
        shutdown, which it skips) are cancelled with the event loop, and uvicorn would log
        each as an error with a traceback: that is what we asked for, so it stays quiet."""
        self.demo_stop.set()
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL + 1)
        self.server.should_exit = self.server.force_exit = True

    def _banner(self) -> None:
        from scanstream.api.auth import rfc3339

        base, token = self.base, self.token
        _say(f"\nscanstream is running: API {base}, {len(self.strategies)} strategies")
        _say(f"dashboard: {base}/#token={token}")
        _say(f"the CLI, in another shell (as user {DEMO_USER!r}):")
        _say(f"  export SCANSTREAM_API_URL={base} SCANSTREAM_TOKEN={token}")
        _say(
            f"(the token is good until {rfc3339(self.token_expires)}; "
            f"`scanstream token {DEMO_USER}` makes another)\n"
        )

    async def _demo(self) -> None:
        """The demo watches its scan from a daemon thread (the terminal client is
        synchronous): a thread stuck on a dead connection can never hold the exit."""
        done = anyio.Event()
        loop = lowlevel.current_token()

        def run() -> None:
            try:
                self.demo_code = _demo(self.base, self.token, self.demo_stop)
            except Exception as exc:  # the API's answer, as one line: it is only a demo
                self.demo_code = 1
                if not self.demo_stop.is_set():
                    _say(f"scanstream: the demo failed: {redact(str(exc))}", err=True)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    from_thread.run_sync(done.set, token=loop)

        threading.Thread(target=run, name="demo", daemon=True).start()
        await done.wait()
        if self.stopping.is_set():
            return
        if self.args.exit_after_demo:
            self.exit_code = self.demo_code
            self.stopping.set()
        else:
            _say(f"\nstill serving: dashboard {self.base}/#token={self.token} (Ctrl-C stops)")


def _demo(base: str, token: str, stop: threading.Event) -> int:
    from scanstream.client import ApiClient
    from scanstream.terminal import watch

    client = ApiClient(base, token)
    status = client.start(None, {"pace_ms": 120})
    _say(f"demo scan {status['scan_id']} started; watching it live:")
    return watch(client, status["scan_id"], stop=stop)
