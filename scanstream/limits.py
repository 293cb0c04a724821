"""What one scan request may cost: the limits checked before anything is written.

- the size of `params` (`SCANSTREAM_MAX_PARAMS_BYTES`): it is stored in the scan's first
  event and read by every strategy;
- the work it asks for (`SCANSTREAM_MAX_SCAN_COST`), estimated as the bars the strategies
  walk through: each series strategy walks every (symbol, venue) series, and a pairs
  strategy every pair of series (n series make n(n-1)/2 pairs), `bars` bars each. The
  default universe with all 14 built-in strategies is ~1.7 million; 200 symbols x 1,250
  bars of `pairs_spread` alone would be ~25 million.

Both answer `422` naming the limit and the request's own figure. A CSV source with no
symbol list cannot be estimated before its folder is read: the estimate counts the
listed symbols only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from scanstream.errors import InvalidRequest
from scanstream.market.params import DEFAULT_SYMBOLS, DEFAULT_VENUES, MarketParams


@dataclass(frozen=True, slots=True)
class ScanLimits:
    max_params_bytes: int
    max_cost: int


def scan_cost(market: MarketParams, works: Sequence[str]) -> int:
    """Bars walked by strategies of these kinds of work ("series" or "pairs")."""
    if market.symbols is not None:
        symbols = len(market.symbols)
    else:
        symbols = len(DEFAULT_SYMBOLS) if market.source == "synthetic" else 0
    venues = len(market.venues) if market.venues is not None else len(DEFAULT_VENUES)
    series = symbols * venues
    per_kind = {"series": series, "pairs": series * (series - 1) // 2}
    return sum(per_kind[work] for work in works) * market.bars


def check_scan(
    limits: ScanLimits, params: Mapping[str, Any], market: MarketParams, works: Sequence[str]
) -> None:
    """Raise `InvalidRequest` (422) naming the limit a request goes over."""
    size = len(orjson.dumps(params))
    if size > limits.max_params_bytes:
        raise InvalidRequest(
            f"params: {size} bytes is over the limit of {limits.max_params_bytes} "
            "(SCANSTREAM_MAX_PARAMS_BYTES)",
            field="params",
        )
    cost = scan_cost(market, works)
    if cost > limits.max_cost:
        raise InvalidRequest(
            f"params: this scan would walk {cost:,} bars (symbols x venues x bars per "
            f"strategy, pairs of series for pair strategies), over the limit of "
            f"{limits.max_cost:,} (SCANSTREAM_MAX_SCAN_COST); ask for fewer symbols, bars "
            "or strategies",
            field="params",
        )
