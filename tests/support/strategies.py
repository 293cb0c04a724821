"""Strategies for tests and fault injection, loaded through SCANSTREAM_STRATEGIES.

Their behaviour is steered by the scan's params, so a test states it in the request:
`slow_s` (seconds `slow` takes), `finds` (opportunities `finder`/`slow` report).
"""

from __future__ import annotations

import anyio

from scanstream.strategies.api import StrategyContext, strategy


async def _find(ctx: StrategyContext, count: int) -> None:
    for i in range(count):
        await ctx.found(
            ctx.opportunity(
                symbol=f"SYM{i}",
                side="long",
                score=(i + 1) / (count + 1),
                expected_return=0.001 * (i + 1),
                details={"i": i},
            )
        )


@strategy("noop", "Does nothing and finds nothing.")
async def noop(ctx: StrategyContext) -> None:
    return None


@strategy("finder", "Finds `finds` opportunities (default 3) at once.")
async def finder(ctx: StrategyContext) -> None:
    await _find(ctx, int(ctx.params.get("finds", 3)))
    await ctx.progress(1.0, "done")


@strategy("slow", "Takes `slow_s` seconds (default 2), reporting progress, then finds `finds`.")
async def slow(ctx: StrategyContext) -> None:
    total = float(ctx.params.get("slow_s", 2.0))
    steps = 20
    for step in range(steps):
        await anyio.sleep(total / steps)
        await ctx.progress((step + 1) / steps, f"step {step + 1}")
    await _find(ctx, int(ctx.params.get("finds", 2)))


@strategy("sleeper", "Sleeps `slow_s` seconds without reporting anything (tests heartbeats).")
async def sleeper(ctx: StrategyContext) -> None:
    await anyio.sleep(float(ctx.params.get("slow_s", 2.0)))
    await _find(ctx, 1)


@strategy("poison", "Always raises.")
async def poison(ctx: StrategyContext) -> None:
    raise RuntimeError("poisoned input")


@strategy("flaky", "Fails on its first attempt, then finds 1 opportunity.")
async def flaky(ctx: StrategyContext) -> None:
    if ctx.attempt == 1:
        raise RuntimeError("transient failure")
    await _find(ctx, 1)
