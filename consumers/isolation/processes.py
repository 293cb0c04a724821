"""`process`: a pool of pre-started strategy processes, one attempt at a time each.

Each process (consumers/isolation/child.py) talks to the worker over a socket pair
(consumers/isolation/wire.py). The worker's side of an attempt only ever awaits that
socket, so strategy code never holds the worker's loop. A stop (cancel, time limit,
lost claim) kills the attempt's process with SIGKILL: nothing it is doing, a C call
included, survives that. A process that dies by itself (a crash, `os._exit`, the
out-of-memory killer) fails its attempt as `StrategyCrashed`; the runner retries it like
any other failure. A killed or dead process is replaced when a free one is next needed.

The pool's processes share their market builds through a folder of the worker's own
(scanstream/market/shared.py): one scan's strategies, each in its own process, build its
market once between them instead of once each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

import anyio

from consumers import metrics
from consumers.context import WriteFn
from consumers.isolation import wire
from consumers.isolation.attempt import AttemptResult, AttemptSpec
from scanstream import events as ev
from scanstream.settings import Settings
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
READY_TIMEOUT_S = 60.0  # importing the strategy modules of a fresh process
REAP_TIMEOUT_S = 2.0


class ProcessCrashed(Exception):
    pass


class StrategyProcess:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer

    @classmethod
    async def spawn(cls, settings: Settings, markets: Path) -> StrategyProcess:
        """A ready strategy process; `markets`: the folder its market builds are shared in."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["SCANSTREAM_STRATEGIES"] = ",".join(settings.strategy_modules)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumers.isolation.child",
                str(theirs.fileno()),
                str(settings.strategy_max_memory_mb),
                str(markets),
                pass_fds=(theirs.fileno(),),
                env=env,
                start_new_session=True,  # the terminal's Ctrl-C is the worker's to handle
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=wire.MAX_FRAME)
        child = cls(proc, reader, writer)
        with anyio.fail_after(READY_TIMEOUT_S):
            ready = await child.receive()
        if ready != ["ready"]:
            await child.kill()
            raise ProcessCrashed(f"a strategy process did not start ({child.exit_text()})")
        return child

    async def receive(self) -> list | None:
        try:
            head = await self.reader.readexactly(wire.HEADER.size)
            (size,) = wire.HEADER.unpack(head)
            return wire.unframe(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def send(self, message: list) -> None:
        self.writer.write(wire.frame(message))
        await self.writer.drain()

    async def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        with anyio.move_on_after(REAP_TIMEOUT_S):
            await self.proc.wait()
        self.writer.close()

    def exit_text(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (the out-of-memory killer?)" if code == -signal.SIGKILL else ""
            return f"it was killed by {name}{hint}"
        return f"it exited with code {code}"


class ProcessExecutor:
    mode = "process"

    def __init__(self, settings: Settings, *, size: int) -> None:
        self.settings = settings
        self.size = max(1, size)
        self._idle: list[StrategyProcess] = []
        self.markets: Path | None = None  # made by start

    async def start(self) -> None:
        """Start the pool's processes at once, so the first attempts do not wait for them."""
        # Private to this worker (mode 0700): its processes load pickles from there.
        self.markets = Path(tempfile.mkdtemp(prefix="scanstream-markets-"))
        started = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        self._idle.extend(started)

    async def run(self, strategy: Strategy, spec: AttemptSpec, write: WriteFn) -> AttemptResult:
        try:
            child = self._idle.pop() if self._idle else await self._spawn()
        except (ProcessCrashed, OSError, TimeoutError) as exc:  # the attempt fails, not the worker
            log.error("no strategy process could be started: %s", exc)
            return AttemptResult(
                error=ev.ErrorInfo(type="StrategyCrashed", message=f"no strategy process: {exc}")
            )
        healthy = False
        try:
            result = await self._attempt(child, spec, write)
            healthy = result is not None
            if result is None:
                await child.kill()
                metrics.STRATEGY_CRASHES.inc()
                text = child.exit_text()
                log.warning("strategy process died: %s", text, extra={"strategy": spec.strategy})
                return AttemptResult(
                    error=ev.ErrorInfo(
                        type="StrategyCrashed", message=f"the strategy's process died: {text}"
                    )
                )
            return result
        except BaseException:
            healthy = False
            with anyio.CancelScope(shield=True):
                metrics.HARD_STOPS.labels("process").inc()
                await child.kill()
            raise
        finally:
            if healthy:
                self._idle.append(child)

    async def _attempt(
        self, child: StrategyProcess, spec: AttemptSpec, write: WriteFn
    ) -> AttemptResult | None:
        """The attempt's conversation; None when the process died on the way."""
        try:
            await child.send(
                [
                    "run",
                    spec.scan_id,
                    spec.strategy,
                    spec.attempt,
                    dict(spec.params),
                    spec.max_findings,
                ]
            )
        except ConnectionError:
            return None
        while True:
            message = await child.receive()
            if message is None:
                return None
            if message[0] == "write":
                status = await write([(t, bytes(d)) for t, d in message[1]])
                try:
                    await child.send(["status", status])
                except ConnectionError:
                    return None
                continue
            _, pending, found_count, error_type, error_message, stopped, dropped = message
            error = ev.ErrorInfo(type=error_type, message=error_message) if error_type else None
            return AttemptResult(
                [(t, bytes(d)) for t, d in pending],
                found_count,
                error=error,
                stopped=stopped,
                findings_dropped=dropped,
            )

    async def _spawn(self) -> StrategyProcess:
        if self.markets is None:
            raise RuntimeError("ProcessExecutor.start first")
        return await StrategyProcess.spawn(self.settings, self.markets)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*(child.kill() for child in self._idle))
        self._idle.clear()
        if self.markets is not None:
            shutil.rmtree(self.markets, ignore_errors=True)
            self.markets = None
