"""Two example strategies, loaded beside the built-in ones.

Run them with the folder on the import path and the module named in SCANSTREAM_STRATEGIES:

    PYTHONPATH=docs/examples SCANSTREAM_STRATEGIES=my_strategies scanstream dev

Every module-level object made with `@strategy` is found; no other registration is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from scanstream.market import Market, series
from scanstream.strategies import StrategyContext, strategy


def option(ctx: StrategyContext, name: str, default: float) -> float:
    """This strategy's own setting `params.<strategy>.<name>`, or its default."""
    own: Mapping[str, Any] = ctx.params.get(ctx.strategy) or {}
    return float(own.get(name, default))


@strategy(
    "drawdown_rebound",
    "Symbols well below their recent high whose last bar closed up: a possible rebound.",
)
async def drawdown_rebound(ctx: StrategyContext) -> None:
    market: Market = ctx.market
    window = int(option(ctx, "window", 72))
    min_drawdown = option(ctx, "min_drawdown", 0.06)
    pace_s = market.params.pace_ms / 1000
    symbols = market.symbols
    for i, symbol in enumerate(symbols, start=1):
        bars = market.bars(symbol)  # the symbol's primary venue
        if len(bars) > window:
            high = max(bars.high[-window:])
            close = bars.close[-1]
            drawdown = 1.0 - close / high
            if drawdown >= min_drawdown and close > bars.open[-1] and close > bars.close[-2]:
                rsi = series.rsi(bars.close, 14)[-1]
                await ctx.found(
                    ctx.opportunity(
                        symbol=symbol,
                        side="long",
                        score=min(1.0, drawdown / (2 * min_drawdown)),  # 0.5 at the threshold
                        expected_return=drawdown / 4,  # a quarter of the way back to the high
                        details={
                            "drawdown": round(drawdown, 6),
                            "high": high,
                            "close": close,
                            "rsi": round(rsi, 2),
                        },
                    )
                )
        if pace_s:
            await anyio.sleep(pace_s)  # demos: let people watch
        await ctx.progress(i / len(symbols), symbol)  # also where cancellation arrives


@strategy(
    "funding_spread",
    "The same perpetual funded differently on two venues: long where funding is low, "
    "short where it is high, and collect the difference.",
)
async def funding_spread(ctx: StrategyContext) -> None:
    market: Market = ctx.market
    min_annualised = option(ctx, "min_annualised", 0.6)
    symbols = market.symbols
    for i, symbol in enumerate(symbols, start=1):
        rates = {}
        for venue in market.venues_of(symbol):
            funding = market.funding(symbol, venue)
            if funding is not None and len(funding):
                rates[venue] = funding.annualised(funding.rate[-1])
        if len(rates) >= 2:
            low = min(rates, key=rates.__getitem__)
            high = max(rates, key=rates.__getitem__)
            spread = rates[high] - rates[low]
            if spread >= min_annualised:
                await ctx.found(
                    ctx.opportunity(
                        symbol=symbol,
                        side="neutral",
                        key=f"{low}<{high}",  # one finding per venue pair
                        score=min(1.0, spread / (2 * min_annualised)),
                        expected_return=spread * 7 / 365,  # a week of the spread
                        details={
                            "long_venue": low,
                            "short_venue": high,
                            "annualised_spread": round(spread, 6),
                        },
                    )
                )
        await ctx.progress(i / len(symbols), symbol)
