"""What the built-in strategies share: the market, tunable thresholds, progress, findings.

Thresholds ("knobs") have defaults here and can be overridden per scan under
`params.<strategy name>`, e.g. `{"rsi": {"upper": 80, "lower": 20}}`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from scanstream.errors import InvalidRequest
from scanstream.events import Side
from scanstream.market import Bars, Market, market_for, parse_params
from scanstream.strategies.api import StrategyContext

T = TypeVar("T")


@dataclass(frozen=True)
class Knob:
    """One tunable threshold: its default and the range an override must fall in."""

    default: float
    lo: float
    hi: float
    integer: bool = False


Knobs = Mapping[str, Knob]
KNOBS: dict[str, Knobs] = {}  # strategy name -> its knobs, for validating a request up front


def tunable(name: str, **knobs: Knob) -> Knobs:
    """Declare the knobs of strategy `name` (and register them for `check_knobs`)."""
    KNOBS[name] = knobs
    return knobs


def knobs(ctx: StrategyContext, spec: Knobs) -> dict[str, float]:
    """The knob values for this run: the defaults, overridden by `params.<ctx.strategy>`."""
    return resolve(ctx.strategy, spec, ctx.params)


def resolve(name: str, spec: Knobs, params: Mapping[str, Any]) -> dict[str, float]:
    values = {k: float(knob.default) for k, knob in spec.items()}
    overrides = params.get(name)
    if overrides is None:
        return values
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(
            f"params.{name} must be an object of thresholds", field=f"params.{name}"
        )
    for key, raw in overrides.items():
        field = f"params.{name}.{key}"
        knob = spec.get(key)
        if knob is None:
            known = ", ".join(sorted(spec)) or "none"
            raise InvalidRequest(f"{field}: unknown threshold (known: {known})", field=field)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise InvalidRequest(f"{field}: must be a number", field=field)
        if knob.integer and raw != int(raw):
            raise InvalidRequest(f"{field}: must be a whole number", field=field)
        if not knob.lo <= raw <= knob.hi:
            raise InvalidRequest(
                f"{field}: must be between {knob.lo:g} and {knob.hi:g}", field=field
            )
        values[key] = float(raw)
    return values


def check_knobs(params: Mapping[str, Any], names: list[str] | None = None) -> None:
    """Validate every threshold override in `params` for the built-in strategies `names` (all)."""
    for name, spec in KNOBS.items():
        if names is None or name in names:
            resolve(name, spec, params)


def market_of(ctx: StrategyContext) -> Market:
    """`ctx.market`, or (when the context has none) the market `ctx.params` describe."""
    market = ctx.market
    if market is None:
        return market_for(parse_params(ctx.params))
    if not isinstance(market, Market):
        raise TypeError(
            f"ctx.market must be a scanstream.market.Market, got {type(market).__name__}"
        )
    return market


async def paced(
    ctx: StrategyContext,
    market: Market,
    items: Sequence[T],
    label: Callable[[T], str],
    *,
    reports: int = 40,
    empty: str | None = None,
) -> AsyncIterator[T]:
    """Each of `items`; once the caller is done with one, progress is reported (as `label(item)`).

    Progress goes out at most `reports` times, and each report first sleeps `pace_ms` (or just
    yields to the event loop when it is 0), so a long loop never holds the event loop for more
    than one step. With no items at all, `empty` (when given) is reported as complete.
    """
    total = max(1, len(items))
    every = max(1, math.ceil(total / reports))
    pace_s = market.params.pace_ms / 1000.0
    for done, item in enumerate(items, 1):
        yield item
        if done % every == 0 or done >= total:
            if pace_s > 0:
                await anyio.sleep(pace_s)
            else:
                await anyio.lowlevel.checkpoint()
            await ctx.progress(min(1.0, done / total), label(item))
    if not items and empty is not None:
        await ctx.progress(1.0, empty)


def each_symbol(ctx: StrategyContext, market: Market) -> AsyncIterator[str]:
    """Each symbol of `market`, reporting progress as `paced` does."""
    return paced(ctx, market, market.symbols, str)


async def each_bars(ctx: StrategyContext, market: Market) -> AsyncIterator[tuple[str, Bars]]:
    """Each symbol of `market` with its bars on its primary venue, reporting progress."""
    async for symbol in each_symbol(ctx, market):
        yield symbol, market.bars(symbol)


async def each_venue(ctx: StrategyContext, market: Market) -> AsyncIterator[tuple[str, str]]:
    """Each (symbol, venue) where the symbol trades, reporting progress once per symbol."""
    async for symbol in each_symbol(ctx, market):
        for venue in market.venues_of(symbol):
            yield symbol, venue


async def report(
    ctx: StrategyContext,
    symbol: str,
    side: Side,
    score: float,
    expected_return: float,
    details: Mapping[str, object],
    *,
    key: str = "",
) -> None:
    """Report a finding; float details are rounded by `num`, whole numbers and text kept as is."""
    await ctx.found(
        ctx.opportunity(
            symbol=symbol,
            side=side,
            score=score,
            expected_return=expected_return,
            details={k: num(v) if isinstance(v, float) else v for k, v in details.items()},
            key=key,
        )
    )


def follow(x: float) -> Side:
    """Go with a move: long when `x` is positive, else short."""
    return "long" if x > 0 else "short"


def fade(x: float) -> Side:
    """Go against a stretch: short when `x` is positive, else long."""
    return "short" if x > 0 else "long"


def rich_or_cheap(value: float, rich_at: float, cheap_at: float) -> Side | None:
    """Short what is rich (`value` at or above `rich_at`), long what is cheap, else None."""
    if value >= rich_at:
        return "short"
    if value <= cheap_at:
        return "long"
    return None


def strength(value: float, threshold: float) -> float:
    """A score in [0, 1]: 0.5 at the threshold, 1 at twice the threshold or beyond."""
    if threshold <= 0:
        return 1.0
    return max(0.0, min(1.0, value / (2.0 * threshold)))


def num(x: float, digits: int = 6) -> float:
    """A detail value: `digits` significant digits, and 0 for nan or infinity (JSON has neither)."""
    if not math.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def ready(*values: float) -> bool:
    """True when no value is nan (every indicator has warmed up)."""
    return not any(math.isnan(v) for v in values)
