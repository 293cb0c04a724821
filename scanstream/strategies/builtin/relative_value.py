"""Relative-value family: prices out of line with a related price."""

from __future__ import annotations

import itertools
import math
from operator import mul

from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    each_symbol,
    fade,
    knobs,
    market_of,
    paced,
    report,
    strength,
    tunable,
)

PAIRS = tunable(
    "pairs_spread",
    window=Knob(240, 30, 5000, integer=True),
    min_correlation=Knob(0.75, 0.0, 1.0),  # of bar returns: only closely related pairs
    min_z=Knob(2.0, 0.5, 10),
    max_half_life=Knob(60, 1, 5000),  # bars: the spread must revert, not drift
)


@strategy(
    "pairs_spread",
    "Pairs trading: for closely correlated pairs, the log-price spread (hedged by a "
    "regression beta) stretched from its mean by a z-score, with a short enough half-life; "
    "short the rich leg, long the cheap one. The symbol is 'A/B' and the side is for A.",
    work="pairs",
)
async def pairs_spread(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, PAIRS)
    w, fee = int(k["window"]), market.params.fee
    logs: dict[str, list[float]] = {}
    unit: dict[str, list[float]] = {}
    last_ts: dict[str, tuple[int, int]] = {}
    for symbol in sorted(market.symbols):
        b = market.bars(symbol)
        if len(b) > w:
            lp = [math.log(c) for c in b.close[-w:]]
            logs[symbol] = lp
            unit[symbol] = S.standardise([y - x for x, y in itertools.pairwise(lp)])
            last_ts[symbol] = (b.ts[-w], b.ts[-1])
    pairs = list(itertools.combinations(logs, 2))
    async for a, b_ in paced(ctx, market, pairs, "/".join, reports=30, empty="no pairs to compare"):
        corr = sum(map(mul, unit[a], unit[b_]))
        if corr >= k["min_correlation"] and last_ts[a] == last_ts[b_]:
            la, lb = logs[a], logs[b_]
            alpha, beta = S.ols(lb, la)
            spread = [x - beta * y - alpha for x, y in zip(la, lb, strict=True)]
            sd = S.std(spread)
            z = spread[-1] / sd if sd > 0 else 0.0
            _, phi = S.ols(spread[:-1], spread[1:])
            half_life = -math.log(2) / math.log(phi) if 0 < phi < 1 else math.inf
            expected = abs(spread[-1]) - 4 * fee
            if (
                beta > 0
                and abs(z) >= k["min_z"]
                and half_life <= k["max_half_life"]
                and expected > 0
            ):
                details = {
                    "correlation": corr,
                    "beta": beta,
                    "z": z,
                    "spread": spread[-1],
                    "spread_std": sd,
                    "half_life_bars": half_life,
                    "window_bars": w,
                }
                score = strength(abs(z), k["min_z"])
                await report(ctx, f"{a}/{b_}", fade(z), score, expected, details)


ARBITRAGE = tunable(
    "cross_venue_arbitrage",
    min_edge_bps=Knob(0, 0, 1000),  # net of a taker fee on each leg
    persistence=Knob(6, 1, 100, integer=True),  # bars inspected for how long the gap has held
)


@strategy(
    "cross_venue_arbitrage",
    "The same symbol priced apart on two venues by more than the fees of buying on one and "
    "selling on the other; neutral (long the cheap venue, short the rich one).",
)
async def cross_venue_arbitrage(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, ARBITRAGE)
    fee = market.params.fee
    costs = 2 * fee
    window = int(k["persistence"])
    async for symbol in each_symbol(ctx, market):
        quotes = {v: market.bars(symbol, v) for v in market.venues_of(symbol)}
        latest = max((b.ts[-1] for b in quotes.values()), default=None)
        live = {v: b for v, b in quotes.items() if b.ts[-1] == latest}
        if len(live) < 2:
            continue
        buy = min(live, key=lambda v: live[v].close[-1])
        sell = max(live, key=lambda v: live[v].close[-1])
        lo, hi = live[buy].close[-1], live[sell].close[-1]
        gross = hi / lo - 1.0
        net = gross - costs
        if net * 10_000 >= k["min_edge_bps"] and net > 0:
            details = {
                "buy_venue": buy,
                "sell_venue": sell,
                "buy_price": lo,
                "sell_price": hi,
                "gross_spread": gross,
                "net_spread": net,
                "fee_per_leg": fee,
                "bars_held": _held(live[buy].close, live[sell].close, costs, window),
            }
            key = f"{buy}>{sell}"
            await report(ctx, symbol, "neutral", strength(gross, costs), net, details, key=key)


def _held(cheap: tuple[float, ...], rich: tuple[float, ...], costs: float, window: int) -> int:
    """For how many of the last `window` bars, counting back, the gap beat the costs."""
    held = 0
    for i in range(1, min(window, len(cheap), len(rich)) + 1):
        if rich[-i] / cheap[-i] - 1.0 <= costs:
            break
        held += 1
    return held
