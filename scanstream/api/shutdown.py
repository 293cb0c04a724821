"""Ending open streams as soon as the process is told to stop.

uvicorn's graceful shutdown waits for every open response to finish before it runs the
lifespan's shutdown: up to `timeout_graceful_shutdown`, after which it cancels them and
logs an error. SSE streams and long-polls would hold it that long every time. ASGI has no
"the server is stopping" event for requests in flight, so this chains a handler in front
of the one uvicorn installed for SIGINT / SIGTERM: it schedules `callback` on the event
loop, then hands the signal on, unchanged, to that handler.

Only in the main thread, where Python delivers signals (uvicorn running in another thread
installs no handler either). Whoever stops uvicorn another way (`server.should_exit =
True`) calls `app.state.live.shutdown()` on the loop first.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what uvicorn handles


@contextmanager
def on_exit_signal(callback: Callable[[], object]) -> Iterator[None]:
    """While the block runs, SIGINT / SIGTERM also call `callback` on the running loop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        with suppress(RuntimeError):  # the loop is closed: nothing left to end
            loop.call_soon_threadsafe(callback)
        _pass_on(previous[signum], signum, frame)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, prev in previous.items():
            if signal.getsignal(signum) is handler and prev is not None:
                signal.signal(signum, prev)


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    """Do what the signal would have done without us."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
    # SIG_IGN, or a handler installed outside Python (None): nothing to hand on
