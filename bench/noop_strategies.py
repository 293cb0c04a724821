"""Fourteen strategies that do nothing: `noop_01` .. `noop_14`.

Loaded by the API and the worker through `SCANSTREAM_STRATEGIES=bench.noop_strategies`,
so the latency and throughput benchmarks measure scanstream's own overhead per job
(fenced start, fenced finish, acknowledgement, the terminal decision) and nothing else.
"""

from __future__ import annotations

from scanstream.strategies.api import Strategy, StrategyContext

COUNT = 14


async def _noop(ctx: StrategyContext) -> None:
    return None


STRATEGIES: list[Strategy] = [
    Strategy(name=f"noop_{i:02d}", description="Does nothing (benchmark).", run=_noop)
    for i in range(1, COUNT + 1)
]
NAMES: list[str] = [s.name for s in STRATEGIES]
