"""What the built-in strategies share: the market, tunable thresholds, progress, scores.

Thresholds ("knobs") have defaults here and can be overridden per scan under
`params.<strategy name>`, e.g. `{"rsi": {"upper": 80, "lower": 20}}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from scanstream.errors import InvalidRequest
from scanstream.market import Market, market_for, parse_params
from scanstream.strategies.api import StrategyContext


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
    values = {k: knob.default for k, knob in spec.items()}
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


class Progress:
    """Reports progress at most `reports` times over `total` steps, pacing each report.

    Every report sleeps `pace_ms` (or just yields to the event loop when it is 0), so a long
    loop never holds the event loop for more than one step.
    """

    def __init__(
        self, ctx: StrategyContext, market: Market, total: int, *, reports: int = 40
    ) -> None:
        self.ctx = ctx
        self.total = max(1, total)
        self.every = max(1, math.ceil(self.total / reports))
        self.pace_s = market.params.pace_ms / 1000.0
        self.done = 0

    async def step(self, message: str) -> None:
        self.done += 1
        if self.done % self.every and self.done < self.total:
            return
        if self.pace_s > 0:
            await anyio.sleep(self.pace_s)
        else:
            await anyio.lowlevel.checkpoint()
        await self.ctx.progress(min(1.0, self.done / self.total), message)

    async def finish(self, message: str = "done") -> None:
        """Report completion if the steps have not (e.g. there was nothing to step through)."""
        if self.done < self.total:
            self.done = self.total
            await self.ctx.progress(1.0, message)


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
