"""The market data a strategy reads: OHLCV bars, perpetual funding and futures basis.

Every series is a frozen dataclass of tuples, so one `Market` can be shared by all the
strategies of a scan (and cached between scans) without anyone changing it under another.
Timestamps are integer seconds since the epoch (UTC), oldest first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scanstream.errors import ScanstreamError

if TYPE_CHECKING:
    from scanstream.market.params import MarketParams


class MarketDataError(ScanstreamError):
    """Market data cannot be read: a missing folder, a malformed file, an unknown symbol."""


@dataclass(frozen=True, slots=True)
class Bars:
    """OHLCV bars of one symbol on one venue."""

    ts: tuple[int, ...]
    open: tuple[float, ...]
    high: tuple[float, ...]
    low: tuple[float, ...]
    close: tuple[float, ...]
    volume: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class Funding:
    """Funding of one perpetual swap: longs pay `rate[i]` for the interval ending at `ts[i]`."""

    ts: tuple[int, ...]
    rate: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def interval_h(self) -> float:
        """Hours between funding payments (8 when there are too few points to tell)."""
        if len(self.ts) < 2:
            return 8.0
        return (self.ts[-1] - self.ts[0]) / (len(self.ts) - 1) / 3600.0

    def annualised(self, rate: float) -> float:
        """A per-interval rate as a yearly fraction."""
        return rate * (365.0 * 24.0 / self.interval_h)


@dataclass(frozen=True, slots=True)
class Basis:
    """A dated future against spot.

    At `ts[i]`, spot was `spot[i]` and the future expiring at `expiry_ts[i]` was `future[i]`.
    """

    ts: tuple[int, ...]
    spot: tuple[float, ...]
    future: tuple[float, ...]
    expiry_ts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ts)


class Market:
    """Bars, funding and basis per (symbol, venue), and a fingerprint of where they came from.

    Not every symbol trades on every venue: `venues_of(symbol)` lists where it does, and its
    first entry is the symbol's primary venue (the one `bars(symbol)` reads by default).
    """

    def __init__(
        self,
        *,
        params: MarketParams,
        symbols: list[str],
        venues: list[str],
        bars: Mapping[tuple[str, str], Bars],
        funding: Mapping[tuple[str, str], Funding],
        basis: Mapping[tuple[str, str], Basis],
        fingerprint: str,
    ) -> None:
        self.params = params
        self._symbols = list(symbols)
        self._venues = list(venues)
        self._bars = dict(bars)
        self._funding = dict(funding)
        self._basis = dict(basis)
        self._fingerprint = fingerprint
        self._venues_of = {
            s: [v for v in self._venues if (s, v) in self._bars] for s in self._symbols
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self._symbols)} symbols, {len(self._venues)} venues, "
            f"fingerprint={self._fingerprint[:12]})"
        )

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def venues(self) -> list[str]:
        return list(self._venues)

    def fingerprint(self) -> str:
        """A digest of the inputs: the same inputs give the same opportunity ids."""
        return self._fingerprint

    def venues_of(self, symbol: str) -> list[str]:
        """The venues where `symbol` trades, primary first (empty for an unknown symbol)."""
        return list(self._venues_of.get(symbol, ()))

    def bars(self, symbol: str, venue: str | None = None) -> Bars:
        """The bars of `symbol` on `venue` (default: its primary venue)."""
        if venue is None:
            venues = self._venues_of.get(symbol)
            if not venues:
                raise MarketDataError(f"no bars for symbol {symbol!r}")
            venue = venues[0]
        try:
            return self._bars[(symbol, venue)]
        except KeyError:
            raise MarketDataError(f"no bars for {symbol!r} on venue {venue!r}") from None

    def funding(self, symbol: str, venue: str) -> Funding | None:
        """The perpetual's funding rates, or None when the venue lists no perpetual for it."""
        return self._funding.get((symbol, venue))

    def basis(self, symbol: str, venue: str) -> Basis | None:
        """The dated future's basis, or None when the venue lists no future for it."""
        return self._basis.get((symbol, venue))

    @property
    def interval_s(self) -> int:
        """Seconds between bars (of the first series that has two bars or more)."""
        for b in self._bars.values():
            if len(b) >= 2:
                return b.ts[1] - b.ts[0]
        return 0


def digest(*parts: str | bytes) -> str:
    """A short, stable hex digest of the given parts (in order)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "big"))
        h.update(raw)
    return h.hexdigest()[:32]
