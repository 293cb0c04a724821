"""`thread`: each attempt on a strategy thread with an event loop of its own.

Threads are started on demand and reused; an idle one waits in the pool. The attempt's
writes hop to the worker's loop (`run_coroutine_threadsafe`), where the fenced store
calls are made, and its end hops back as a done-callback. Nothing on the worker's loop
ever waits for strategy code: the loop only awaits an `asyncio.Event` that the thread
sets when the attempt is over.

Stopping (see the package docstring): cancel the attempt's task; if the thread does not
give it up within `SOFT_STOP_S` (it is computing, not awaiting), raise `HardStop` inside
the thread with `PyThreadState_SetAsyncExc`, and retire the thread, since the exception
may have landed in the thread's event loop rather than in the strategy. If even that
has not ended it within `HARD_STOP_S` (a long C call), the worker stops waiting: the
attempt counts as stopped, and the thread is abandoned; it exits once the call returns.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

import anyio

from consumers import metrics
from consumers.context import Pairs, RunContext, WriteFn
from consumers.isolation.attempt import AttemptResult, AttemptSpec, run_attempt
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
SOFT_STOP_S = 0.25  # a cancelled attempt that awaits ends well within this
HARD_STOP_S = 0.5  # after the injected exception; then the thread is abandoned
_names = itertools.count(1)


class HardStop(BaseException):
    """Raised inside a strategy thread whose attempt ignored its stop.

    A BaseException, so a strategy's `except Exception` cannot swallow it."""


class StrategyThread:
    """A daemon thread running an event loop, one attempt at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.retired = False
        self.thread = threading.Thread(
            target=self._main, name=f"strategy-{next(_names)}", daemon=True
        )
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        except HardStop:
            pass  # it landed in the loop itself, between attempts: the thread is retired
        finally:
            with suppress(RuntimeError):  # closed while a callback still ran
                self.loop.close()

    def interrupt(self) -> None:
        """Raise `HardStop` in the thread at its next Python instruction; retire it."""
        self.retired = True
        ident = self.thread.ident
        if ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(HardStop)
            )
        self.retire()

    def retire(self) -> None:
        self.retired = True
        if not self.loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.loop.stop)


class _Handoff:
    """One attempt's crossing between the worker's loop and a strategy thread."""

    def __init__(self, main_loop: asyncio.AbstractEventLoop) -> None:
        self.main_loop = main_loop
        self.done = asyncio.Event()  # on the worker's loop
        self.result: AttemptResult | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[AttemptResult] | None = None
        self.context: RunContext | None = None
        self.cancel_requested = False

    def finished(self, task: asyncio.Task[AttemptResult]) -> None:
        """In the thread: the attempt's task ended; tell the worker's loop."""
        if task.cancelled():
            error: BaseException | None = asyncio.CancelledError()
            result = None
        elif task.exception() is not None:
            error, result = task.exception(), None
        else:
            error, result = None, task.result()
        with suppress(RuntimeError):  # the worker's loop is closed: nobody is waiting
            self.main_loop.call_soon_threadsafe(self._set, result, error)

    def _set(self, result: AttemptResult | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()


async def _coro(awaitable: Awaitable[str]) -> str:
    return await awaitable


class ThreadExecutor:
    mode = "thread"

    def __init__(self, market_factory: Callable[[Mapping[str, Any]], Any]) -> None:
        self.market_factory = market_factory
        self._idle: list[StrategyThread] = []
        self.abandoned = 0  # threads left in a C call after their attempt's stop

    async def start(self) -> None:
        pass

    async def run(self, strategy: Strategy, spec: AttemptSpec, write: WriteFn) -> AttemptResult:
        worker = self._idle.pop() if self._idle else StrategyThread()
        handoff = _Handoff(asyncio.get_running_loop())
        worker.loop.call_soon_threadsafe(self._begin, worker, handoff, strategy, spec, write)
        try:
            await handoff.done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(worker, handoff)
            raise
        finally:
            if not worker.retired:
                self._idle.append(worker)
        if handoff.result is None:  # HardStop landed in the loop, or the task was cancelled
            raise RuntimeError(f"strategy thread ended the attempt with {handoff.error!r}")
        return handoff.result

    def _begin(
        self,
        worker: StrategyThread,
        handoff: _Handoff,
        strategy: Strategy,
        spec: AttemptSpec,
        write: WriteFn,
    ) -> None:
        """In the thread: start the attempt's task (unless it was stopped before)."""
        main_loop = handoff.main_loop

        async def write_on_main(pairs: Pairs) -> str:
            future: Future[str] = asyncio.run_coroutine_threadsafe(_coro(write(pairs)), main_loop)
            return await asyncio.wrap_future(future)

        context = RunContext(
            write_on_main,
            scan_id=spec.scan_id,
            strategy=spec.strategy,
            attempt=spec.attempt,
            params=spec.params,
            market_factory=self.market_factory,
        )
        handoff.context = context
        task = worker.loop.create_task(run_attempt(strategy, context))
        task.add_done_callback(handoff.finished)
        handoff.task = task
        if handoff.cancel_requested:
            task.cancel()

    async def _stop(self, worker: StrategyThread, handoff: _Handoff) -> None:
        """Make the attempt let go: cancel it, then interrupt, then abandon its thread."""
        handoff.cancel_requested = True
        if handoff.context is not None:
            handoff.context.stop_reason = handoff.context.stop_reason or "cancelled"
        task = handoff.task
        if task is not None:
            worker.loop.call_soon_threadsafe(task.cancel)
        with anyio.move_on_after(SOFT_STOP_S):
            await handoff.done.wait()
        if handoff.done.is_set():
            return
        metrics.HARD_STOPS.labels("thread").inc()
        worker.interrupt()
        with anyio.move_on_after(HARD_STOP_S):
            await handoff.done.wait()
        if not handoff.done.is_set():
            self.abandoned += 1
            metrics.ABANDONED_THREADS.inc()
            spec = handoff.context
            log.error(
                "a strategy thread did not stop (a long call without a Python instruction); "
                "its attempt is ended and the thread abandoned",
                extra={"strategy": spec.strategy if spec else None},
            )

    async def aclose(self) -> None:
        for worker in self._idle:
            worker.retire()
        self._idle.clear()
