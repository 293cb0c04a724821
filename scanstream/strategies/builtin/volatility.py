"""Volatility and activity family: quiet markets about to move, and sudden volume."""

from __future__ import annotations

from scanstream.events import Side
from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    each_bars,
    follow,
    knobs,
    market_of,
    report,
    strength,
    tunable,
)

SQUEEZE = tunable(
    "bollinger_squeeze",
    window=Knob(20, 2, 500, integer=True),
    width=Knob(2.0, 0.5, 5),  # band half-width in standard deviations
    history=Knob(240, 20, 5000, integer=True),  # how far back "narrow" is judged
    max_percentile=Knob(0.1, 0.0, 0.5),  # squeezed: band width in this bottom share of its history
    coiled_percentile=Knob(0.03, 0.0, 0.5),  # squeezed this hard without a breakout: neutral
)


@strategy(
    "bollinger_squeeze",
    "Bollinger band width at the bottom of its history (a volatility squeeze): a close "
    "outside the bands is a breakout (long/short); an extreme squeeze alone is neutral "
    "(a move is due, direction unknown).",
)
async def bollinger_squeeze(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, SQUEEZE)
    n, hist = int(k["window"]), int(k["history"])
    fee = market.params.fee
    async for symbol, b in each_bars(ctx, market):
        close = b.close
        if len(close) < n + hist + 1:
            continue
        mid, sd = S.sma(close, n), S.rolling_std(close, n)
        widths = [
            2 * k["width"] * s / m for s, m in zip(sd[-hist - 1 :], mid[-hist - 1 :], strict=True)
        ]
        pct = S.percentile_rank(widths[:-1], widths[-2])  # the squeeze, judged before the last bar
        c = close[-1]
        upper, lower = mid[-1] + k["width"] * sd[-1], mid[-1] - k["width"] * sd[-1]
        side: Side = "long" if c > upper else "short" if c < lower else "neutral"
        limit = k["max_percentile"] if side != "neutral" else k["coiled_percentile"]
        expected = 0.5 * (upper - lower) / c - 2 * fee
        if pct <= limit and expected > 0:
            score = 0.5 + 0.5 * (1.0 - pct / limit) if limit > 0 else 1.0
            details = {
                "band_width": widths[-1],
                "width_percentile": pct,
                "upper": upper,
                "lower": lower,
                "close": c,
                "history_bars": hist,
            }
            await report(ctx, symbol, side, score, expected, details)


VOLUME = tunable(
    "volume_spike",
    window=Knob(48, 5, 2000, integer=True),
    recent=Knob(4, 1, 50, integer=True),  # look for the spike in the last N bars
    min_ratio=Knob(4.0, 1.0, 100),  # volume over the window's median
    min_move=Knob(1.5, 0.0, 20),  # bar return in standard deviations for a directional call
)


@strategy(
    "volume_spike",
    "A bar with volume several times its recent median: with a large price move it is "
    "followed (long/short), without one it is flagged neutral (something is happening).",
)
async def volume_spike(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, VOLUME)
    n, recent = int(k["window"]), int(k["recent"])
    fee = market.params.fee
    async for symbol, b in each_bars(ctx, market):
        if len(b) <= n + recent + 1:
            continue
        best = max(range(len(b) - recent, len(b)), key=lambda i: b.volume[i])
        base = S.median(b.volume[best - n : best])
        ratio = b.volume[best] / base if base > 0 else 0.0
        if ratio >= k["min_ratio"]:
            sigma = S.std(S.returns(b.close[best - n : best]))
            move = b.close[best] / b.close[best - 1] - 1.0
            move_sd = move / sigma if sigma > 0 else 0.0
            directional = abs(move_sd) >= k["min_move"]
            side: Side = follow(move) if directional else "neutral"
            expected = max(0.5 * abs(move) - 2 * fee, 0.0) if directional else 0.0
            details = {
                "volume_ratio": ratio,
                "bars_ago": len(b) - 1 - best,
                "bar_return": move,
                "move_sd": move_sd,
                "median_volume": base,
            }
            await report(ctx, symbol, side, strength(ratio, k["min_ratio"]), expected, details)
