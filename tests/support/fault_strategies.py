"""Strategies for the fault-injection tests, loaded through SCANSTREAM_STRATEGIES beside
`tests.support.strategies`. Steered by the scan's params like those:

- `steady_a`, `steady_b`, `steady_c`: `steps` steps (default 20) over `slow_s` seconds
  (default 2); each step reports progress and finds one opportunity whose id depends only
  on the strategy and the step, so a re-run after a crash finds the very same ids.
"""

from __future__ import annotations

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
