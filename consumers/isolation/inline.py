"""`inline`: the strategy runs on the worker's own loop (cheapest; for strategies that
await often)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumers.context import WriteFn
from consumers.isolation.attempt import AttemptResult, AttemptSpec, context_for, run_attempt
from scanstream.strategies.api import Strategy


class InlineExecutor:
    mode = "inline"

    def __init__(self, market_factory: Callable[[Mapping[str, Any]], Any]) -> None:
        self.market_factory = market_factory

    async def start(self) -> None:
        pass

    async def run(self, strategy: Strategy, spec: AttemptSpec, write: WriteFn) -> AttemptResult:
        context = context_for(spec, write, self.market_factory)
        try:
            return await run_attempt(strategy, context)
        finally:
            context.stop_reason = context.stop_reason or "cancelled"  # no write after the end

    async def aclose(self) -> None:
        pass
