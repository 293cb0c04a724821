"""Relative-value family: prices out of line with a related price."""

from __future__ import annotations

import itertools
import math
from operator import mul

from scanstream.market import series as S
from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    Progress,
    knobs,
    market_of,
    num,
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
)
async def pairs_spread(ctx: StrategyContext) -> None:
    market = market_of(ctx)
    k = knobs(ctx, PAIRS)
    w = int(k["window"])
    fee = market.params.fee
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
    progress = Progress(ctx, market, len(pairs), reports=30)
    for a, b_ in pairs:
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
                await ctx.found(
                    ctx.opportunity(
                        symbol=f"{a}/{b_}",
                        side="short" if z > 0 else "long",
                        score=strength(abs(z), k["min_z"]),
                        expected_return=expected,
                        details={
                            "correlation": num(corr),
                            "beta": num(beta),
                            "z": num(z),
                            "spread": num(spread[-1]),
                            "spread_std": num(sd),
                            "half_life_bars": num(half_life),
                            "window_bars": w,
                        },
                    )
                )
        await progress.step(f"{a}/{b_}")
    await progress.finish("no pairs to compare" if not pairs else "done")


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
    market = market_of(ctx)
    k = knobs(ctx, ARBITRAGE)
    fee = market.params.fee
    costs = 2 * fee
    window = int(k["persistence"])
    progress = Progress(ctx, market, len(market.symbols))
    for symbol in market.symbols:
        quotes = {v: market.bars(symbol, v) for v in market.venues_of(symbol)}
        latest = max((b.ts[-1] for b in quotes.values()), default=None)
        live = {v: b for v, b in quotes.items() if b.ts[-1] == latest}
        if len(live) >= 2:
            buy = min(live, key=lambda v: live[v].close[-1])
            sell = max(live, key=lambda v: live[v].close[-1])
            lo, hi = live[buy].close[-1], live[sell].close[-1]
            gross = hi / lo - 1.0
            net = gross - costs
            if net * 10_000 >= k["min_edge_bps"] and net > 0:
                held = _held(live[buy].close, live[sell].close, costs, window)
                await ctx.found(
                    ctx.opportunity(
                        symbol=symbol,
                        side="neutral",
                        key=f"{buy}>{sell}",
                        score=strength(gross, costs),
                        expected_return=net,
                        details={
                            "buy_venue": buy,
                            "sell_venue": sell,
                            "buy_price": num(lo),
                            "sell_price": num(hi),
                            "gross_spread": num(gross),
                            "net_spread": num(net),
                            "fee_per_leg": num(fee),
                            "bars_held": held,
                        },
                    )
                )
        await progress.step(symbol)


def _held(cheap: tuple[float, ...], rich: tuple[float, ...], costs: float, window: int) -> int:
    """For how many of the last `window` bars, counting back, the gap beat the costs."""
    held = 0
    for i in range(1, min(window, len(cheap), len(rich)) + 1):
        if rich[-i] / cheap[-i] - 1.0 <= costs:
            break
        held += 1
    return held
