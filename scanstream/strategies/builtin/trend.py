"""Trend family: moves that tend to continue."""

from __future__ import annotations

import math

from scanstream.events import Side
from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    each_bars,
    follow,
    knobs,
    market_of,
    ready,
    report,
    strength,
    tunable,
)

MOMENTUM = tunable(
    "momentum",
    lookback=Knob(72, 5, 2000, integer=True),
    min_t=Knob(2.2, 0.5, 20),
    continuation=Knob(0.25, 0.01, 1),  # the share of the past move expected to carry on
)


@strategy(
    "momentum",
    "Trailing return over a lookback window in units of its own volatility (a t-statistic): "
    "strong, steady moves tend to continue.",
)
async def momentum(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, MOMENTUM)
    n, fee = int(k["lookback"]), market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b.close) <= n + 1:
            continue
        window = b.close[-n - 1 :]
        vol = S.std(S.log_returns(window))
        move = math.log(window[-1] / window[0])
        t = move / (vol * math.sqrt(n)) if vol > 0 else 0.0
        past = window[-1] / window[0] - 1.0
        expected = k["continuation"] * abs(past) - 2 * fee
        if abs(t) >= k["min_t"] and expected > 0:
            details = {
                "lookback_bars": n,
                "return": past,
                "t_stat": t,
                "volatility_per_bar": vol,
                "close": b.close[-1],
            }
            await report(ctx, symbol, follow(t), strength(abs(t), k["min_t"]), expected, details)


BREAKOUT = tunable(
    "breakout",
    channel=Knob(48, 5, 2000, integer=True),
    min_volume_ratio=Knob(1.0, 0, 20),
)


@strategy(
    "breakout",
    "Donchian channel breakout: the last close beyond the highest high or lowest low of the "
    "channel window, confirmed by volume; scored by the margin in ATRs and the volume.",
)
async def breakout(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, BREAKOUT)
    n, fee = int(k["channel"]), market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= n + 15:
            continue
        top, bottom = S.donchian(b.high, b.low, n)
        c = b.close[-1]
        atr = S.atr(b.high, b.low, b.close, 14)[-1]
        vol_ratio = b.volume[-1] / S.mean(b.volume[-n - 1 : -1])
        side: Side | None = "long" if c > top else "short" if c < bottom else None
        if side and atr > 0 and vol_ratio >= k["min_volume_ratio"]:
            margin = (c - top if side == "long" else bottom - c) / atr
            score = 0.4 + 0.3 * min(margin, 1.0) + 0.3 * min(max(vol_ratio - 1.0, 0.0) / 2.0, 1.0)
            expected = min(0.5 * (top - bottom), 3.0 * atr) / c - 2 * fee
            if expected > 0:
                details = {
                    "channel_bars": n,
                    "channel_high": top,
                    "channel_low": bottom,
                    "close": c,
                    "margin_atr": margin,
                    "volume_ratio": vol_ratio,
                }
                await report(ctx, symbol, side, score, expected, details)


MACD = tunable(
    "macd_cross",
    fast=Knob(12, 2, 500, integer=True),
    slow=Knob(26, 3, 1000, integer=True),
    signal=Knob(9, 2, 500, integer=True),
    within=Knob(2, 1, 50, integer=True),  # the cross happened in the last N bars
    min_slope=Knob(0.2, 0, 10),  # MACD line change over 3 bars, in ATRs
)


@strategy(
    "macd_cross",
    "MACD line crossing its signal line in the last bars, with momentum behind it "
    "(the MACD line's recent change in ATRs).",
)
async def macd_cross(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, MACD)
    fast, slow, sig, within = (int(k[x]) for x in ("fast", "slow", "signal", "within"))
    fee = market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= slow + sig + 5 or fast >= slow:
            continue
        line, signal, hist = S.macd(b.close, fast, slow, sig)
        direction, ago = S.last_cross(line, signal, within)
        atr = S.atr(b.high, b.low, b.close, 14)[-1]
        slope = (line[-1] - line[-4]) / atr if atr > 0 else 0.0
        if direction and slope * direction >= k["min_slope"]:
            expected = 1.5 * atr / b.close[-1] - 2 * fee
            if expected > 0:
                details = {
                    "macd": line[-1],
                    "signal": signal[-1],
                    "histogram": hist[-1],
                    "bars_since_cross": ago,
                    "slope_atr": slope,
                    "atr": atr,
                }
                score = strength(abs(slope), k["min_slope"])
                await report(ctx, symbol, follow(direction), score, expected, details)


TREND = tunable(
    "trend_following",
    fast=Knob(20, 2, 500, integer=True),
    slow=Knob(100, 3, 2000, integer=True),
    within=Knob(24, 1, 500, integer=True),
    min_adx=Knob(25, 0, 100),
)


@strategy(
    "trend_following",
    "A fresh moving-average crossover (fast EMA over slow EMA) confirmed by a strong "
    "trend (ADX above the threshold).",
)
async def trend_following(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, TREND)
    fast_n, slow_n, within = int(k["fast"]), int(k["slow"]), int(k["within"])
    fee = market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= slow_n + within or fast_n >= slow_n:
            continue
        fast, slow = S.ema(b.close, fast_n), S.ema(b.close, slow_n)
        direction, ago = S.last_cross(fast, slow, within)
        adx = S.adx(b.high, b.low, b.close, 14)[-1]
        if direction and ready(adx) and adx >= k["min_adx"]:
            atr = S.atr(b.high, b.low, b.close, 14)[-1]
            expected = 3.0 * atr / b.close[-1] - 2 * fee
            if expected > 0:
                details = {
                    "ema_fast": fast[-1],
                    "ema_slow": slow[-1],
                    "adx": adx,
                    "bars_since_cross": ago,
                    "atr": atr,
                }
                score = strength(adx, k["min_adx"])
                await report(ctx, symbol, follow(direction), score, expected, details)


RELATIVE = tunable(
    "relative_strength",
    lookback=Knob(168, 5, 2000, integer=True),
    min_z=Knob(1.8, 0.5, 10),
    continuation=Knob(0.2, 0.01, 1),
)


@strategy(
    "relative_strength",
    "Cross-sectional strength: each symbol's return over the lookback against the whole "
    "universe's (a z-score); the leaders long, the laggards short.",
)
async def relative_strength(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, RELATIVE)
    n, fee = int(k["lookback"]), market.params.fee
    rets: dict[str, float] = {}
    async for symbol, b in each_bars(ctx, market):
        if len(b.close) > n:
            rets[symbol] = b.close[-1] / b.close[-1 - n] - 1.0
    if len(rets) < 5:
        return
    mu, sd = S.mean(list(rets.values())), S.std(list(rets.values()))
    if not sd > 0:
        return
    for symbol, r in rets.items():
        z = (r - mu) / sd
        expected = k["continuation"] * abs(r - mu) - 2 * fee
        if abs(z) >= k["min_z"] and expected > 0:
            details = {
                "lookback_bars": n,
                "return": r,
                "universe_mean": mu,
                "universe_std": sd,
                "z": z,
                "universe_size": len(rets),
            }
            await report(ctx, symbol, follow(z), strength(abs(z), k["min_z"]), expected, details)
