"""Fifty strategies `n00`..`n49`: many strategies finishing at once (fault tests). Each
does nothing, or first computes for the scan's `compute_s` seconds (default 0) without
awaiting, as a strategy doing real work does."""

from __future__ import annotations

import time

from scanstream.strategies.api import Strategy, StrategyContext


async def _noop(ctx: StrategyContext) -> None:
    end = time.thread_time() + float(ctx.params.get("compute_s", 0))
    total = 0
    while time.thread_time() < end:  # CPU time of its own: the same work however shared
        for i in range(5_000):
            total += i * i


STRATEGIES = [Strategy(f"n{i:02d}", "Does nothing (fault tests).", _noop) for i in range(50)]
