"""Carry family: get paid to hold a hedged position (perpetual funding, futures basis)."""

from __future__ import annotations

from scanstream.strategies.api import StrategyContext, strategy
from scanstream.strategies.builtin.common import (
    Knob,
    each_venue,
    fade,
    knobs,
    market_of,
    report,
    rich_or_cheap,
    strength,
    tunable,
)

FUNDING = tunable(
    "funding_carry",
    min_annualised=Knob(0.4, 0.0, 10),
    average_of=Knob(3, 1, 100, integer=True),  # funding payments averaged
    consistency=Knob(0.66, 0.0, 1.0),  # share of the last 3x payments with the same sign
    holding_days=Knob(7, 0.1, 365),
)


@strategy(
    "funding_carry",
    "Perpetual funding far from zero and steady: when longs pay (positive funding) short "
    "the perpetual and hold spot; when shorts pay, the reverse. Side is the perpetual's; "
    "one finding per venue.",
)
async def funding_carry(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, FUNDING)
    n, fee = int(k["average_of"]), market.params.fee
    async for symbol, venue in each_venue(ctx, market):
        f = market.funding(symbol, venue)
        if f is None or len(f) < 3 * n:
            continue
        avg = sum(f.rate[-n:]) / n
        ann = f.annualised(avg)
        recent = f.rate[-3 * n :]
        same = sum(1 for r in recent if r * avg > 0) / len(recent)
        payments = k["holding_days"] * 24.0 / f.interval_h
        expected = abs(avg) * payments - 4 * fee  # open and close both legs
        if abs(ann) >= k["min_annualised"] and same >= k["consistency"] and expected > 0:
            details = {
                "venue": venue,
                "funding_rate": avg,
                "annualised": ann,
                "interval_hours": f.interval_h,
                "same_sign_share": same,
                "holding_days": k["holding_days"],
            }
            score = strength(abs(ann), k["min_annualised"])
            side = fade(avg)  # the side that is paid
            await report(ctx, symbol, side, score, expected, details, key=venue)


BASIS = tunable(
    "basis_carry",
    min_annualised=Knob(0.3, 0.0, 10),  # contango: short the future, hold spot
    max_backwardation=Knob(-0.1, -10, 0.0),  # backwardation: long the future, short spot
    min_days=Knob(3, 0, 365),  # too close to expiry to bother
)


@strategy(
    "basis_carry",
    "Dated futures basis, annualised: a rich future (contango above the threshold) is a "
    "cash-and-carry (short the future, hold spot) locked in at expiry; a deep backwardation "
    "the reverse. Side is the future's; one finding per venue.",
)
async def basis_carry(ctx: StrategyContext) -> None:
    market, k = market_of(ctx), knobs(ctx, BASIS)
    fee = market.params.fee
    async for symbol, venue in each_venue(ctx, market):
        x = market.basis(symbol, venue)
        if x is None or not len(x):
            continue
        days = (x.expiry_ts[-1] - x.ts[-1]) / 86400.0
        if days < max(k["min_days"], 1e-6):
            continue
        raw = x.future[-1] / x.spot[-1] - 1.0
        ann = raw * 365.0 / days
        side = rich_or_cheap(ann, k["min_annualised"], k["max_backwardation"])
        expected = abs(raw) - 4 * fee
        if side and expected > 0:
            threshold = k["min_annualised"] if side == "short" else -k["max_backwardation"]
            details = {
                "venue": venue,
                "spot": x.spot[-1],
                "future": x.future[-1],
                "basis": raw,
                "annualised": ann,
                "days_to_expiry": days,
                "expiry_ts": x.expiry_ts[-1],
            }
            await report(
                ctx, symbol, side, strength(abs(ann), threshold), expected, details, key=venue
            )
