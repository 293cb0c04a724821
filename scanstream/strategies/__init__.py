"""Strategies: the API a strategy is written against, and the registry that finds them.

    from scanstream.strategies import StrategyContext, strategy

    @strategy("my_signal", "What it finds, in one sentence.")
    async def my_signal(ctx: StrategyContext) -> None: ...

See docs/strategies.md.
"""

from scanstream.events import Opportunity
from scanstream.strategies.api import (
    Strategy,
    StrategyContext,
    StrategyStopped,
    make_opportunity,
    opportunity_id,
    strategy,
)
from scanstream.strategies.registry import builtin_strategies, check_params, load_strategies

__all__ = [
    "Opportunity",
    "Strategy",
    "StrategyContext",
    "StrategyStopped",
    "builtin_strategies",
    "check_params",
    "load_strategies",
    "make_opportunity",
    "opportunity_id",
    "strategy",
]
