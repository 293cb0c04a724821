"""Market data for strategies: `parse_params` a scan's params, then `market_for` them
(`load_market` does both).

    from scanstream.market import load_market, market_for, parse_params
    market = market_for(parse_params(request_params))
    market = load_market(request_params, settings.csv)  # the same, with the CSV settings given

`market_for` keeps the last few markets, so the strategies of one scan in one process
share one market instead of each building its own. `share_builds` makes processes share
their builds too (`process` isolation's strategy processes: see `shared.py`).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from scanstream.market.csv_source import CsvMarket, csv_signature, write_csv
from scanstream.market.data import Bars, Basis, Funding, Market, MarketDataError
from scanstream.market.params import DEFAULT_SYMBOLS, DEFAULT_VENUES, MarketParams, parse_params
from scanstream.market.shared import MarketShare
from scanstream.market.synthetic import SyntheticMarket
from scanstream.settings import CsvSettings

__all__ = [
    "DEFAULT_SYMBOLS",
    "DEFAULT_VENUES",
    "Bars",
    "Basis",
    "CsvMarket",
    "Funding",
    "Market",
    "MarketDataError",
    "MarketParams",
    "MarketShare",
    "SyntheticMarket",
    "build_market",
    "load_market",
    "market_for",
    "parse_params",
    "share_builds",
    "write_csv",
]

CACHE_SIZE = 4  # a market can be large: up to ~30 MB (see MAX_SYNTHETIC_BARS)
_cache: OrderedDict[Hashable, Market] = OrderedDict()
# Every market still referenced anywhere (a running strategy holds its scan's), cached or
# not: a market evicted while its scan runs is found here instead of being built again.
_alive: weakref.WeakValueDictionary[Hashable, Market] = weakref.WeakValueDictionary()
_building: dict[Hashable, Future[Market]] = {}  # builds under way, so each key builds once
_lock = threading.Lock()
_share: MarketShare | None = None  # builds shared with other processes (`share_builds`)


def build_market(params: MarketParams, csv_settings: CsvSettings | None = None) -> Market:
    """Build the market `params` describe, uncached."""
    if params.source == "csv":
        return CsvMarket(params, csv_settings)
    return SyntheticMarket(params)


def market_for(params: MarketParams, csv_settings: CsvSettings | None = None) -> Market:
    """The market `params` describe, from a small LRU cache (thread-safe).

    The key is the params themselves, plus the CSV settings and each CSV file's size, mtime
    and inode for the CSV source, so an edited folder is read again. `csv_settings`
    defaults to `CsvSettings.from_env()`. Building the default synthetic market takes tens of
    milliseconds: call this from a worker thread if that is too long to block for.

    One build per key at a time: the 14 strategy threads of a scan that start together
    wait for the first one's build instead of each building the same market (14 builds of
    a 250,000-bar market cost 3.5 s of CPU where one costs 0.24 s). And a market that
    anything still holds is never built twice: with more scans running than the cache
    holds, a scan's later strategies get the market its earlier ones hold.
    """
    key: Hashable = (params, None)
    if params.source == "csv":
        csv_settings = CsvSettings.from_env() if csv_settings is None else csv_settings
        key = (params, csv_settings, csv_signature(params, csv_settings))
    while True:
        with _lock:
            market = _cache.get(key)
            if market is None:
                market = _alive.get(key)
            if market is not None:
                _remember(key, market)
                return market
            building = _building.get(key)
            if building is None:
                building = _building[key] = Future()
                break
        try:
            return _result_of(building)
        except _BuildStopped:  # its builder was stopped half-way: build it here
            continue
    try:
        if _share is None:
            market = build_market(params, csv_settings)
        else:
            market = _share.get_or_build(key, lambda: build_market(params, csv_settings))
    except Exception as exc:  # the same params fail the same way for every waiter
        _finish(key, building, error=exc)
        raise
    except BaseException:  # this attempt was stopped (a time limit): a waiter takes over
        _finish(key, building, error=_BuildStopped())
        raise
    _finish(key, building, market=market)
    return market


class _BuildStopped(Exception):
    """The thread building a market was stopped before it finished."""


def _result_of(building: Future[Market]) -> Market:
    # In short waits: a strategy thread stopped by its time limit (an exception raised in
    # it between two Python instructions) must not sit in one long C-level wait.
    while True:
        try:
            return building.result(timeout=0.05)
        except FutureTimeout:
            continue


def _finish(
    key: Hashable,
    building: Future[Market],
    *,
    market: Market | None = None,
    error: BaseException | None = None,
) -> None:
    with _lock:
        del _building[key]
        if market is not None:
            _remember(key, market)
    if market is not None:
        building.set_result(market)
    else:
        building.set_exception(error or _BuildStopped())


def _remember(key: Hashable, market: Market) -> None:
    """Under `_lock`: `market` is the most recently used."""
    _cache[key] = market
    _cache.move_to_end(key)
    _alive[key] = market
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)


def load_market(params: Mapping[str, Any], csv_settings: CsvSettings | None = None) -> Market:
    """The market of a scan's raw `params` (as `scan.requested` holds them): what a worker
    hands its strategies. `csv_settings` defaults to `CsvSettings.from_env()`."""
    return market_for(parse_params(dict(params), csv_settings=csv_settings), csv_settings)


def share_builds(share: MarketShare | None) -> None:
    """From now on, build markets through `share` (None: in this process alone)."""
    global _share
    _share = share


def clear_cache() -> None:
    """Forget every cached market (tests, or after replacing CSV files in place)."""
    with _lock:
        _cache.clear()
        _alive.clear()
