"""Mean-reversion family: stretched prices that tend to come back."""

from __future__ import annotations

from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    each_bars,
    fade,
    knobs,
    market_of,
    ready,
    report,
    rich_or_cheap,
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
    market, k = market_of(ctx), knobs(ctx, MEAN_REVERSION)
    n, fee = int(k["window"]), market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= max(n, 30):
            continue
        z = S.zscore(b.close, n)
        adx = S.adx(b.high, b.low, b.close, 14)[-1]
        if ready(z, adx) and abs(z) >= k["min_z"] and adx < k["max_adx"]:
            c, avg = b.close[-1], S.mean(b.close[-n:])
            expected = _reversion_return(c, avg, k["reversion"], fee)
            if expected > 0:
                details = {"window_bars": n, "z": z, "mean": avg, "close": c, "adx": adx}
                await report(ctx, symbol, fade(z), strength(abs(z), k["min_z"]), expected, details)


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
    market, k = market_of(ctx), knobs(ctx, RSI)
    n, target_n = int(k["period"]), int(k["target_window"])
    fee = market.params.fee
    async for symbol, b in each_bars(ctx, market):
        close = b.close
        if len(close) <= max(n, target_n) + 1:
            continue
        value = S.rsi(close, n)[-1]
        side = rich_or_cheap(value, k["upper"], k["lower"])
        if side and ready(value):
            c, target = close[-1], S.mean(close[-target_n:])
            expected = _reversion_return(c, target, 0.5, fee)
            level = k["upper"] if side == "short" else k["lower"]
            if expected > 0:
                score = strength(abs(value - 50.0), max(abs(level - 50.0), 1e-9))
                details = {"rsi": value, "period": n, "level": level, "close": c, "target": target}
                await report(ctx, symbol, side, score, expected, details)


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
    market, k = market_of(ctx), knobs(ctx, VWAP)
    n, fee = int(k["window"]), market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= max(n, 15):
            continue
        vw = S.vwap(b.high, b.low, b.close, b.volume, n)
        atr = S.atr(b.high, b.low, b.close, 14)[-1]
        c = b.close[-1]
        dev = (c - vw) / atr if ready(vw, atr) and atr > 0 else 0.0
        expected = _reversion_return(c, vw, k["reversion"], fee)
        if abs(dev) >= k["min_atr"] and expected > 0:
            details = {"window_bars": n, "vwap": vw, "close": c, "deviation_atr": dev, "atr": atr}
            await report(
                ctx, symbol, fade(dev), strength(abs(dev), k["min_atr"]), expected, details
            )


def _reversion_return(close: float, target: float, share: float, fee: float) -> float:
    """The return of `close` moving `share` of the way back to `target`, net of a round trip."""
    return share * abs(target - close) / close - 2 * fee
