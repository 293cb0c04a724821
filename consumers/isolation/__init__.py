"""Where strategy code runs, apart from the loop that keeps the worker's promises.

The worker's event loop refreshes claims, watches for cancellation and makes every Redis
call. A strategy that computes for seconds without an await must not stall any of that,
so strategy code runs elsewhere, chosen with `SCANSTREAM_ISOLATION` (or
`scanstream worker --isolation`):

- `thread` (default): each attempt runs on a strategy thread with an event loop of its
  own; its progress and findings are handed to the worker's loop, which writes them.
  The worker's loop keeps running beside a busy strategy (the GIL is handed over every
  few milliseconds). A stop (cancel, time limit, lost claim) cancels the attempt; one
  that does not yield within `SOFT_STOP_S` gets an exception raised inside its thread
  at its next Python instruction, and its thread is retired. Code stuck inside one long
  C call cannot be interrupted: its attempt is ended anyway (the worker stops waiting
  for it; its late writes are fenced off) and the thread is abandoned until the call
  returns.
- `process`: a pool of pre-started strategy processes, one attempt at a time each. A
  stop kills the attempt's process (and a fresh one takes its place), so even a C call
  is stopped; a crash, `os._exit` or an out-of-memory kill fails only that attempt.
  `SCANSTREAM_STRATEGY_MAX_MEMORY_MB` caps each process's address space. Findings and
  params cross a socket, so each attempt costs more; strategies are loaded in each
  process from `SCANSTREAM_STRATEGIES` and read the built-in market sources.
- `inline`: on the worker's own loop, as cheap as it gets; only for strategies known to
  await often (a strategy that computes without awaiting stalls its worker's claims).

Every mode turns one attempt into an `AttemptResult`; the runner (consumers/runner.py)
writes its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from consumers.context import WriteFn
from consumers.isolation.attempt import AttemptResult, AttemptSpec
from scanstream.settings import ISOLATION_MODES as MODES
from scanstream.settings import Settings
from scanstream.strategies.api import Strategy


class Executor(Protocol):
    """Runs attempts. Cancelling `run` stops the strategy (within about a second, whatever
    it is doing) before the cancellation propagates."""

    mode: str

    async def start(self) -> None: ...
    async def run(self, strategy: Strategy, spec: AttemptSpec, write: WriteFn) -> AttemptResult: ...
    async def aclose(self) -> None: ...


def executor_for(
    settings: Settings,
    market_factory: Callable[[Mapping[str, Any]], Any],
    *,
    concurrency: int,
) -> Executor:
    mode = settings.isolation
    if mode == "inline":
        from consumers.isolation.inline import InlineExecutor

        return InlineExecutor(market_factory)
    if mode == "thread":
        from consumers.isolation.threads import ThreadExecutor

        return ThreadExecutor(market_factory)
    if mode == "process":
        from consumers.isolation.processes import ProcessExecutor

        return ProcessExecutor(settings, size=concurrency)
    raise ValueError(f"unknown isolation mode {mode!r}; choose one of {', '.join(MODES)}")


__all__ = ["MODES", "AttemptResult", "AttemptSpec", "Executor", "executor_for"]
