"""Fifty no-op strategies `n00`..`n49`: many strategies finishing at once (fault tests)."""

from __future__ import annotations

from scanstream.strategies.api import Strategy, StrategyContext


async def _noop(ctx: StrategyContext) -> None:
    return None


STRATEGIES = [Strategy(f"n{i:02d}", "Does nothing (fault tests).", _noop) for i in range(50)]
