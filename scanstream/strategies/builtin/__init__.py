"""The 14 built-in strategies, grouped by family, in the order `builtin_strategies()` lists them."""

from __future__ import annotations

from scanstream.strategies.api import Strategy
from scanstream.strategies.builtin.carry import basis_carry, funding_carry
from scanstream.strategies.builtin.relative_value import cross_venue_arbitrage, pairs_spread
from scanstream.strategies.builtin.reversion import mean_reversion, rsi, vwap_deviation
from scanstream.strategies.builtin.trend import (
    breakout,
    macd_cross,
    momentum,
    relative_strength,
    trend_following,
)
from scanstream.strategies.builtin.volatility import bollinger_squeeze, volume_spike

BUILTIN: tuple[Strategy, ...] = (
    momentum,
    mean_reversion,
    breakout,
    rsi,
    macd_cross,
    bollinger_squeeze,
    volume_spike,
    pairs_spread,
    cross_venue_arbitrage,
    funding_carry,
    basis_carry,
    trend_following,
    vwap_deviation,
    relative_strength,
)

__all__ = ["BUILTIN"]
