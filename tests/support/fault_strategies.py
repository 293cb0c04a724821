"""Strategies for the fault-injection tests, loaded through SCANSTREAM_STRATEGIES beside
`tests.support.strategies`. Steered by the scan's params like those:

- `steady_a`, `steady_b`, `steady_c`: `steps` steps (default 20) over `slow_s` seconds
  (default 2); each step reports progress and finds one opportunity whose id depends only
  on the strategy and the step, so a re-run after a crash finds the very same ids.
- `hog`: computes `hog_s` seconds (default 60) in pure Python without one await, then
  finds one opportunity. With `beat_file`, it writes the time to that file every 50 ms
  while it computes, so a test can see when it really stopped.
- `crasher` (`os._exit(1)`), `self_kill` (SIGKILL to its own process, as the out-of-memory
  killer does) and `glutton` (allocates 64 MiB at a time until it fails): for process
  isolation only, where they take down nothing but their own attempt.
"""

from __future__ import annotations

import os
import signal
import time

import anyio

from scanstream.strategies.api import Strategy, StrategyContext


async def _steady(ctx: StrategyContext) -> None:
    total = float(ctx.params.get("slow_s", 2.0))
    steps = int(ctx.params.get("steps", 20))
    for step in range(steps):
        await anyio.sleep(total / steps)
        await ctx.found(
            ctx.opportunity(
                symbol=f"S{step:03d}",
                side="long",
                score=(step + 1) / (steps + 1),
                expected_return=0.001 * (step + 1),
                details={"step": step},
            )
        )
        await ctx.progress((step + 1) / steps, f"step {step + 1}/{steps}")


STRATEGIES = [
    Strategy(name, "Steady steps, one finding each (fault tests).", _steady)
    for name in ("steady_a", "steady_b", "steady_c")
]


def _compute(seconds: float, beat_file: str | None) -> int:
    """Busy pure-Python work for `seconds`, never yielding to any event loop."""
    end = time.monotonic() + seconds
    next_beat = 0.0
    total = 0
    while (now := time.monotonic()) < end:
        for i in range(5_000):
            total += i * i
        if beat_file and now >= next_beat:
            with open(beat_file + ".tmp", "w") as f:  # replaced whole: never seen empty
                f.write(repr(time.time()))
            os.replace(beat_file + ".tmp", beat_file)
            next_beat = now + 0.05
    return total


async def _hog(ctx: StrategyContext) -> None:
    await ctx.progress(0.0, "computing")
    _compute(float(ctx.params.get("hog_s", 60.0)), ctx.params.get("beat_file"))
    await ctx.found(ctx.opportunity(symbol="HOG", side="long", score=0.5, expected_return=0.01))


async def _crasher(ctx: StrategyContext) -> None:
    await ctx.progress(0.1, "about to exit")
    os._exit(1)


async def _self_kill(ctx: StrategyContext) -> None:
    await ctx.progress(0.1, "about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


async def _glutton(ctx: StrategyContext) -> None:
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))


STRATEGIES += [
    Strategy("hog", "Computes `hog_s` seconds without awaiting (isolation tests).", _hog),
    Strategy("crasher", "Exits its process (process isolation tests).", _crasher),
    Strategy("self_kill", "SIGKILLs its own process (process isolation tests).", _self_kill),
    Strategy("glutton", "Allocates until it fails (process isolation tests).", _glutton),
]
