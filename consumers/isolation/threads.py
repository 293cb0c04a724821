"""`thread`: each attempt on a strategy thread with an event loop of its own.

Threads are started on demand and reused: an idle one blocks on its own queue
(`queue.SimpleQueue`, which waits without the GIL), runs the attempt it is handed with
`run_until_complete` on its private loop, and tells the worker's loop with one
`call_soon_threadsafe`. The attempt's writes hop to the worker's loop
(`run_coroutine_threadsafe`), where the fenced store calls are made. Nothing on the
worker's loop ever waits for strategy code: it only awaits an `asyncio.Event` that the
thread sets when the attempt is over. (A first version kept each thread's loop running
and handed attempts over with `call_soon_threadsafe`; waking an idle loop through its
self-pipe cost ~160 us of CPU per attempt, the queue ~25 us.)

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
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

import anyio

from consumers import metrics
from consumers.context import Pairs, RunContext, WriteFn
from consumers.isolation.attempt import (
    AttemptResult,
    AttemptSpec,
    context_for,
    error_info,
    run_attempt,
)
from scanstream.strategies.api import Strategy

log = logging.getLogger("scanstream.worker")
SOFT_STOP_S = 0.25  # a cancelled attempt that awaits ends well within this
HARD_STOP_S = 0.5  # after the injected exception; then the thread is abandoned
_names = itertools.count(1)


class HardStop(BaseException):
    """Raised inside a strategy thread whose attempt ignored its stop.

    A BaseException, so a strategy's `except Exception` cannot swallow it."""


class _Handoff:
    """One attempt's crossing between the worker's loop and a strategy thread."""

    def __init__(
        self,
        main_loop: asyncio.AbstractEventLoop,
        strategy: Strategy,
        context: RunContext,
    ) -> None:
        self.main_loop = main_loop
        self.strategy = strategy
        self.context = context
        self.done = asyncio.Event()  # on the worker's loop
        self.result: AttemptResult | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[AttemptResult] | None = None
        self.cancel_requested = False
        self.finished = False  # set in the thread, once

    def finish(self, result: AttemptResult | None, error: BaseException | None) -> None:
        """In the thread: the attempt is over; tell the worker's loop."""
        if self.finished:
            return
        self.finished = True
        with suppress(RuntimeError):  # the worker's loop is closed: nobody is waiting
            self.main_loop.call_soon_threadsafe(self._set, result, error)

    def _set(self, result: AttemptResult | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()


class StrategyThread:
    """A daemon thread with a private event loop, running one attempt at a time."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Handoff | None] = queue.SimpleQueue()
        self.retired = False
        self.thread = threading.Thread(
            target=self._main, name=f"strategy-{next(_names)}", daemon=True
        )
        self.thread.start()

    def _main(self) -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        handoff: _Handoff | None = None
        try:
            while (handoff := self.inbox.get()) is not None:
                task = loop.create_task(run_attempt(handoff.strategy, handoff.context))
                handoff.task = task  # before the flag is read: see ThreadExecutor._stop
                if handoff.cancel_requested:
                    task.cancel()
                try:
                    result = loop.run_until_complete(task)
                except BaseException as exc:  # cancelled, or HardStop
                    handoff.finish(None, exc)
                    if self.retired:
                        return
                    continue
                handoff.finish(result, None)
                handoff = None
        except HardStop:  # it landed outside the attempt (the thread is retired)
            if handoff is not None:
                handoff.finish(None, HardStop())
        finally:
            with suppress(RuntimeError):
                loop.close()

    def interrupt(self) -> None:
        """Raise `HardStop` in the thread at its next Python instruction; retire it."""
        self.retired = True
        ident = self.thread.ident
        if ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(HardStop)
            )

    def retire(self) -> None:
        self.retired = True
        self.inbox.put(None)


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
        main_loop = asyncio.get_running_loop()

        async def write_on_main(pairs: Pairs) -> str:
            future: Future[str] = asyncio.run_coroutine_threadsafe(_coro(write(pairs)), main_loop)
            return await asyncio.wrap_future(future)

        context = context_for(spec, write_on_main, self.market_factory)
        handoff = _Handoff(main_loop, strategy, context)
        worker = self._idle.pop() if self._idle else StrategyThread()
        worker.inbox.put(handoff)
        try:
            await handoff.done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(worker, handoff)
            raise
        finally:
            if not worker.retired:
                self._idle.append(worker)
        if handoff.result is None:  # the strategy cancelled itself: its attempt fails
            error = handoff.error or RuntimeError("the strategy's thread ended its attempt")
            return AttemptResult(
                found_count=handoff.context.found_count,
                error=error_info(error),
                findings_dropped=handoff.context.findings_dropped,
            )
        return handoff.result

    async def _stop(self, worker: StrategyThread, handoff: _Handoff) -> None:
        """Make the attempt let go: cancel it, then interrupt, then abandon its thread."""
        handoff.cancel_requested = True
        handoff.context.stop_reason = handoff.context.stop_reason or "cancelled"
        task = handoff.task
        if task is not None:
            with suppress(RuntimeError):  # the thread's loop finished meanwhile
                task.get_loop().call_soon_threadsafe(task.cancel)
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
            log.error(
                "a strategy thread did not stop (a long call without a Python instruction); "
                "its attempt is ended and the thread abandoned",
                extra={"scan_id": handoff.context.scan_id, "strategy": handoff.context.strategy},
            )

    async def aclose(self) -> None:
        for worker in self._idle:
            worker.retire()
        self._idle.clear()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
