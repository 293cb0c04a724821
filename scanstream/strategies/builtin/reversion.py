"""Mean-reversion family: stretched prices that tend to come back."""

from __future__ import annotations

from scanstream.events import Side
from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    Progress,
    knobs,
    market_of,
    num,
    ready,
    strength,
    tunable,
)

MEAN_REVERSION = tunable(
    "mean_reversion",
    window=Knob(48, 5, 2000, integer=True),
    min_z=Knob(2.3, 0.5, 10),
    max_adx=Knob(25, 0, 100),  # no fading of a strong trend
    reversion=Knob(0.5, 0.01, 1),  # the share of the gap to the mean expected to close
)


@strategy(
    "mean_reversion",
    "Close stretched from its moving average (a z-score) while the market is not trending "
    "(ADX below the threshold): fade the stretch.",
)
async def mean_reversion(ctx: StrategyContext) -> None:
    market = market_of(ctx)
    k = knobs(ctx, MEAN_REVERSION)
    n = int(k["window"])
    fee = market.params.fee
    progress = Progress(ctx, market, len(market.symbols))
    for symbol in market.symbols:
        b = market.bars(symbol)
        if len(b) > max(n, 30):
            z = S.zscore(b.close, n)
            adx = S.adx(b.high, b.low, b.close, 14)[-1]
            if ready(z, adx) and abs(z) >= k["min_z"] and adx < k["max_adx"]:
                c = b.close[-1]
                avg = S.mean(b.close[-n:])
                expected = k["reversion"] * abs(avg - c) / c - 2 * fee
                if expected > 0:
                    await ctx.found(
                        ctx.opportunity(
                            symbol=symbol,
                            side="short" if z > 0 else "long",
                            score=strength(abs(z), k["min_z"]),
                            expected_return=expected,
                            details={
                                "window_bars": n,
                                "z": num(z),
                                "mean": num(avg),
                                "close": num(c),
                                "adx": num(adx),
                            },
                        )
                    )
        await progress.step(symbol)


RSI = tunable(
    "rsi",
    period=Knob(14, 2, 500, integer=True),
    upper=Knob(72, 50, 100),
    lower=Knob(28, 0, 50),
    target_window=Knob(20, 2, 500, integer=True),  # expected to revert toward this SMA
)


@strategy(
    "rsi",
    "Relative strength index overbought (above the upper level: short) or oversold "
    "(below the lower level: long); the further beyond, the stronger.",
)
async def rsi(ctx: StrategyContext) -> None:
    market = market_of(ctx)
    k = knobs(ctx, RSI)
    n, target_n = int(k["period"]), int(k["target_window"])
    fee = market.params.fee
    progress = Progress(ctx, market, len(market.symbols))
    for symbol in market.symbols:
        close = market.bars(symbol).close
        if len(close) > max(n, target_n) + 1:
            value = S.rsi(close, n)[-1]
            side: Side | None = None
            if value >= k["upper"]:
                side = "short"
            elif value <= k["lower"]:
                side = "long"
            if side and ready(value):
                c = close[-1]
                target = S.mean(close[-target_n:])
                expected = 0.5 * abs(target - c) / c - 2 * fee
                level = k["upper"] if side == "short" else k["lower"]
                if expected > 0:
                    await ctx.found(
                        ctx.opportunity(
                            symbol=symbol,
                            side=side,
                            score=strength(abs(value - 50.0), max(abs(level - 50.0), 1e-9)),
                            expected_return=expected,
                            details={
                                "rsi": num(value),
                                "period": n,
                                "level": num(level),
                                "close": num(c),
                                "target": num(target),
                            },
                        )
                    )
        await progress.step(symbol)


VWAP = tunable(
    "vwap_deviation",
    window=Knob(24, 2, 2000, integer=True),
    min_atr=Knob(3.0, 0.1, 50),
    reversion=Knob(0.5, 0.01, 1),
)


@strategy(
    "vwap_deviation",
    "Close far from the rolling volume-weighted average price, in ATRs: "
    "expect a partial return to VWAP.",
)
async def vwap_deviation(ctx: StrategyContext) -> None:
    market = market_of(ctx)
    k = knobs(ctx, VWAP)
    n = int(k["window"])
    fee = market.params.fee
    progress = Progress(ctx, market, len(market.symbols))
    for symbol in market.symbols:
        b = market.bars(symbol)
        if len(b) > max(n, 15):
            vw = S.vwap(b.high, b.low, b.close, b.volume, n)
            atr = S.atr(b.high, b.low, b.close, 14)[-1]
            c = b.close[-1]
            dev = (c - vw) / atr if ready(vw, atr) and atr > 0 else 0.0
            expected = k["reversion"] * abs(c - vw) / c - 2 * fee
            if abs(dev) >= k["min_atr"] and expected > 0:
                await ctx.found(
                    ctx.opportunity(
                        symbol=symbol,
                        side="short" if dev > 0 else "long",
                        score=strength(abs(dev), k["min_atr"]),
                        expected_return=expected,
                        details={
                            "window_bars": n,
                            "vwap": num(vw),
                            "close": num(c),
                            "deviation_atr": num(dev),
                            "atr": num(atr),
                        },
                    )
                )
        await progress.step(symbol)
