"""One strategy that takes a set time: `paced` sleeps `pause_s` seconds (default 0.2).

Loaded through `SCANSTREAM_STRATEGIES=bench.paced_strategies` by bench.fair_share, whose
figures are about the order jobs run in, so every job must cost the same known time.
"""

from __future__ import annotations

import anyio

from scanstream.strategies.api import Strategy, StrategyContext


async def _paced(ctx: StrategyContext) -> None:
    await anyio.sleep(float(ctx.params.get("pause_s", 0.2)))


STRATEGIES: list[Strategy] = [
    Strategy(name="paced", description="Sleeps `pause_s` seconds (benchmark).", run=_paced)
]
