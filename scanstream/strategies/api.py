"""The strategy API: what a strategy is, and what it may do while it runs.

A strategy is an async function taking a `StrategyContext`. It reads market data from
`ctx.market`, reports progress with `await ctx.progress(...)` and findings with
`await ctx.found(ctx.opportunity(...))`. Both calls are also where cancellation reaches
it: they raise `StrategyStopped` once the scan is cancelled or the attempt has been
superseded, and the strategy should simply let that propagate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from scanstream.events import Opportunity, Side


class StrategyStopped(Exception):
    """Raised inside a strategy when it must stop: the scan ended or the attempt lost its job."""


class MarketSource(Protocol):
    """Market data a strategy reads. See `scanstream.market` for the built-in sources."""

    @property
    def symbols(self) -> list[str]: ...
    @property
    def venues(self) -> list[str]: ...
    def fingerprint(self) -> str:
        """A digest of the inputs: the same inputs give the same opportunity ids."""
        ...


class StrategyContext(Protocol):
    scan_id: str
    strategy: str
    attempt: int
    params: Mapping[str, Any]

    @property
    def market(self) -> Any: ...
    @property
    def cancelled(self) -> bool: ...
    async def progress(self, fraction: float, message: str = "") -> None: ...
    async def found(self, opportunity: Opportunity) -> None: ...
    def opportunity(
        self,
        *,
        symbol: str,
        side: Side,
        score: float,
        expected_return: float,
        details: Mapping[str, Any] | None = None,
        key: str = "",
    ) -> Opportunity: ...


StrategyFn = Callable[[StrategyContext], Awaitable[None]]


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    run: StrategyFn
    timeout_s: float | None = None  # None: the SCANSTREAM_STRATEGY_TIMEOUT default
    # What it walks through, for the cost estimate of a scan (scanstream/limits.py): each
    # series ("series"), or each pair of series ("pairs").
    work: str = "series"


def strategy(
    name: str, description: str, *, timeout_s: float | None = None, work: str = "series"
) -> Callable[[StrategyFn], Strategy]:
    """Decorator: turn an async function into a `Strategy` that the loader finds."""
    if work not in ("series", "pairs"):
        raise ValueError(f"work must be 'series' or 'pairs', got {work!r}")

    def wrap(fn: StrategyFn) -> Strategy:
        return Strategy(name=name, description=description, run=fn, timeout_s=timeout_s, work=work)

    return wrap


def opportunity_id(strategy: str, fingerprint: str, symbol: str, side: str, key: str = "") -> str:
    """Deterministic: the same strategy on the same input finds the same id."""
    raw = "\x1f".join((strategy, fingerprint, symbol, side, key))
    return "opp_" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def make_opportunity(
    *,
    strategy: str,
    fingerprint: str,
    symbol: str,
    side: Side,
    score: float,
    expected_return: float,
    details: Mapping[str, Any] | None = None,
    key: str = "",
) -> Opportunity:
    return Opportunity(
        id=opportunity_id(strategy, fingerprint, symbol, side, key),
        strategy=strategy,
        symbol=symbol,
        side=side,
        score=min(1.0, max(0.0, round(float(score), 6))),
        expected_return=round(float(expected_return), 8),
        details=dict(details or {}),
    )


class ContextBase:
    """What every `StrategyContext` implementation shares: lazy market data, and
    opportunity ids derived from the strategy and the market's fingerprint, so the
    worker's context and the replay tool's local one can never disagree on an id."""

    def __init__(
        self,
        *,
        scan_id: str,
        strategy: str,
        attempt: int,
        params: Mapping[str, Any],
        market_factory: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        self.scan_id = scan_id
        self.strategy = strategy
        self.attempt = attempt
        self.params = params
        self._market_factory = market_factory
        self._market: Any = None
        self._found_ids: set[str] = set()

    @property
    def market(self) -> Any:
        if self._market is None:
            self._market = self._market_factory(self.params)
        return self._market

    @property
    def found_count(self) -> int:
        return len(self._found_ids)

    def opportunity(
        self,
        *,
        symbol: str,
        side: Side,
        score: float,
        expected_return: float,
        details: Mapping[str, Any] | None = None,
        key: str = "",
    ) -> Opportunity:
        fingerprint = getattr(self.market, "fingerprint", None)
        return make_opportunity(
            strategy=self.strategy,
            fingerprint=str(fingerprint()) if callable(fingerprint) else "",
            symbol=symbol,
            side=side,
            score=score,
            expected_return=expected_return,
            details=details,
            key=key,
        )

    def seen(self, opportunity: Opportunity) -> bool:
        """Whether this attempt has reported `opportunity` already."""
        return opportunity.id in self._found_ids

    def _first_sighting(self, opportunity: Opportunity) -> bool:
        """True the first time this attempt reports `opportunity` (each id counts once)."""
        if opportunity.id in self._found_ids:
            return False
        self._found_ids.add(opportunity.id)
        return True
