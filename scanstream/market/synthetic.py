"""A seeded, synthetic market: realistic enough that every strategy has something to find.

Each symbol follows a geometric random walk driven by a shared market factor, through a
sequence of regimes (calm, trending, mean-reverting, volatility bursts), with volume that
rises with big moves and occasional volume spikes. About a third of the symbols are
cointegrated followers of an earlier symbol. Every venue sees the symbol's price with a
small, mean-reverting dislocation and rare larger ones. Perpetual funding follows the
recent trend with occasional extremes; some symbols have a dated future whose basis does too.

Determinism: every random number comes from `random.Random` seeded from the params, and the
arithmetic uses only `+ - * /` and `sqrt` (no `exp`, `log` or `cos`, whose last bit can
differ between C libraries), so the same params give bit-identical data on any machine.
"""

from __future__ import annotations

import hashlib
import math
import random

from scanstream.market.data import Bars, Basis, Funding, Market, digest
from scanstream.market.params import DEFAULT_SYMBOLS, DEFAULT_VENUES, MarketParams

GENERATOR_VERSION = "synthetic/1"  # bump when the output changes: it is part of the fingerprint
START_TS = 1_704_067_200  # 2024-01-01T00:00:00Z, fixed so the data never depends on the clock
YEAR_S = 365 * 86400
FUNDING_S = 8 * 3600
# Normal-ish draws are sums of uniforms (Irwin-Hall), scaled to unit variance: four for a
# price shock, two where a triangular draw will do. Exact IEEE arithmetic, and fast.
_SQRT3 = math.sqrt(3.0)  # (sum of 4 uniforms - 2) * sqrt(3) has variance 1
_SQRT6 = math.sqrt(6.0)  # (sum of 2 uniforms - 1) * sqrt(6) has variance 1

# Rough price levels of the default universe; other symbols get a seeded level.
BASE_PRICES: dict[str, float] = {
    "BTC-USD": 42_000.0, "ETH-USD": 2_300.0, "SOL-USD": 95.0, "XRP-USD": 0.55,
    "ADA-USD": 0.52, "DOGE-USD": 0.085, "AVAX-USD": 34.0, "DOT-USD": 7.1,
    "LINK-USD": 14.5, "LTC-USD": 70.0, "BCH-USD": 240.0, "ATOM-USD": 9.8,
    "UNI-USD": 6.3, "XLM-USD": 0.12, "NEAR-USD": 3.4, "APT-USD": 9.1,
    "ARB-USD": 1.6, "OP-USD": 3.3, "FIL-USD": 5.4, "ICP-USD": 11.2,
    "ETC-USD": 25.0, "AAVE-USD": 105.0, "INJ-USD": 36.0, "TRX-USD": 0.105,
}  # fmt: skip


def fingerprint_of(params: MarketParams) -> str:
    """The synthetic market's fingerprint, computed from the params alone (no generation)."""
    symbols, venues = _universe(params)
    return digest(
        GENERATOR_VERSION,
        str(params.seed),
        ",".join(symbols),
        ",".join(venues),
        str(params.bars),
        str(params.interval_s),
    )


def SyntheticMarket(params: MarketParams) -> Market:
    """Generate the synthetic market of `params` (source, seed, universe, bars, interval)."""
    symbols, venues = _universe(params)
    gen = _Generator(params, symbols, venues)
    return Market(
        params=params,
        symbols=symbols,
        venues=venues,
        bars=gen.bars,
        funding=gen.funding,
        basis=gen.basis,
        fingerprint=fingerprint_of(params),
    )


def _universe(params: MarketParams) -> tuple[list[str], list[str]]:
    symbols = list(params.symbols) if params.symbols is not None else list(DEFAULT_SYMBOLS)
    venues = list(params.venues) if params.venues is not None else list(DEFAULT_VENUES)
    return symbols, venues


def _rng(seed: int, *names: str) -> random.Random:
    """An independent stream per (seed, name...): adding a symbol leaves the others' draws alone."""
    raw = hashlib.sha256("\x1f".join((str(seed), *names)).encode()).digest()
    return random.Random(int.from_bytes(raw[:16], "big"))


class _Path:
    """A symbol's fair price per bar, the volatility per bar and a volume multiplier per bar."""

    __slots__ = ("price", "sigma", "vmult")

    def __init__(self, price: list[float], sigma: list[float], vmult: list[float]) -> None:
        self.price = price
        self.sigma = sigma
        self.vmult = vmult


class _Generator:
    def __init__(self, params: MarketParams, symbols: list[str], venues: list[str]) -> None:
        self.p = params
        self.n = params.bars
        self.dt = params.interval_s
        self.ts = tuple(START_TS + i * self.dt for i in range(self.n))
        self.bar_vol_scale = math.sqrt(self.dt / YEAR_S)  # annual vol -> per-bar vol
        self.bars: dict[tuple[str, str], Bars] = {}
        self.funding: dict[tuple[str, str], Funding] = {}
        self.basis: dict[tuple[str, str], Basis] = {}
        market = self._market_factor()
        paths: dict[str, _Path] = {}
        leaders: list[str] = []
        for i, symbol in enumerate(symbols):
            rng = _rng(params.seed, "symbol", symbol)
            if i > 0 and leaders and rng.random() < 0.3:
                leader = leaders[int(rng.random() * len(leaders))]
                paths[symbol] = self._follower(rng, symbol, paths[leader])
            else:
                paths[symbol] = self._walk(rng, symbol, market)
                leaders.append(symbol)
            self._venues(rng, symbol, paths[symbol], venues)

    def _market_factor(self) -> list[float]:
        rnd = _rng(self.p.seed, "market").random
        sig = 0.35 * self.bar_vol_scale
        return [sig * (rnd() + rnd() + rnd() + rnd() - 2.0) * _SQRT3 for _ in range(self.n)]

    def _base_price(self, rng: random.Random, symbol: str) -> float:
        base = BASE_PRICES.get(symbol)
        if base is None:
            base = (0.05, 0.5, 5.0, 50.0, 500.0)[int(rng.random() * 5)] * (0.5 + 2.0 * rng.random())
        return base

    def _walk(self, rng: random.Random, symbol: str, market: list[float]) -> _Path:
        """A regime-switching geometric random walk with a market beta."""
        rnd = rng.random
        n = self.n
        beta = 0.6 + 0.7 * rnd()
        idio = (0.3 + 0.5 * rnd()) * self.bar_vol_scale
        price = [0.0] * n
        sigma = [0.0] * n
        vmult = [1.0] * n
        p = self._base_price(rng, symbol)
        t = 0
        while t < n:
            length = 25 + int(rnd() * 110)
            kind = rnd()
            drift = kappa = 0.0
            volm = 1.0
            if kind < 0.25:  # calm: volatility compresses
                volm = 0.45 + 0.2 * rnd()
            elif kind < 0.55:  # trend, up or down
                drift = (0.05 + 0.15 * rnd()) * idio * (1.0 if rnd() < 0.5 else -1.0)
            elif kind < 0.85:  # mean reversion around where the regime started
                kappa = 0.03 + 0.09 * rnd()
            else:  # volatility burst, short-lived
                volm = 1.6 + 1.0 * rnd()
                length = 10 + length // 4
            anchor = p
            sig = idio * volm
            end = min(n, t + length)
            while t < end:
                z = (rnd() + rnd() + rnd() + rnd() - 2.0) * _SQRT3
                r = beta * market[t] + drift + sig * z - kappa * (p / anchor - 1.0)
                if r < -0.5:
                    r = -0.5
                p *= 1.0 + r
                price[t] = p
                sigma[t] = sig
                u = rnd()
                if u < 0.02:  # news: a volume spike, often with a jump
                    vmult[t] = 3.0 + 7.0 * rnd()
                    jump = (rnd() - 0.5) * 6.0 * sig
                    p *= 1.0 + jump
                    price[t] = p
                elif volm > 1.5:
                    vmult[t] = 1.3 + rnd()
                t += 1
        return _Path(price, sigma, vmult)

    def _follower(self, rng: random.Random, symbol: str, leader: _Path) -> _Path:
        """Cointegrated with `leader`: its price, times a ratio, times (1 + an OU spread)."""
        rnd = rng.random
        base = self._base_price(rng, symbol)
        ratio = base / leader.price[0] if leader.price[0] > 0 else 1.0
        k = 0.03 + 0.06 * rnd()
        sig_s = (0.15 + 0.2 * rnd()) * self.bar_vol_scale
        s = 0.0
        price = [0.0] * self.n
        vmult = [1.0] * self.n
        for t in range(self.n):
            s = s * (1.0 - k) + sig_s * (rnd() + rnd() + rnd() + rnd() - 2.0) * _SQRT3
            if rnd() < 0.006:  # the spread breaks out, then reverts
                s += (3.0 + 5.0 * rnd()) * sig_s * (1.0 if rnd() < 0.5 else -1.0)
                vmult[t] = 1.5 + 2.0 * rnd()
            if s < -0.5:
                s = -0.5
            price[t] = ratio * leader.price[t] * (1.0 + s)
            vmult[t] *= leader.vmult[t] if leader.vmult[t] < 2.5 else 1.0 + 0.5 * rnd()
        return _Path(price, list(leader.sigma), vmult)

    def _venues(self, rng: random.Random, symbol: str, path: _Path, venues: list[str]) -> None:
        """The symbol on each venue: always on the first, usually on the others.

        Each venue draws from its own stream, so one venue's data does not depend on the others.
        """
        base_volume = (
            2e6 / (path.price[0] if path.price[0] > 0 else 1.0) * (0.3 + 1.4 * rng.random())
        )
        for j, venue in enumerate(venues):
            vrng = _rng(self.p.seed, "venue", symbol, venue)
            listed, share, future = vrng.random() < 0.85, 0.4 + 0.5 * vrng.random(), vrng.random()
            if j > 0 and not listed:
                continue
            bars = self._bars(vrng, path, base_volume * (1.0 if j == 0 else share), j > 0)
            self.bars[(symbol, venue)] = bars
            self._carry(vrng, symbol, venue, bars, with_future=j < 2 and future < 0.6)

    def _bars(self, rng: random.Random, path: _Path, base_volume: float, secondary: bool) -> Bars:
        rnd = rng.random
        n = self.n
        o = [0.0] * n
        h = [0.0] * n
        lo = [0.0] * n
        c = [0.0] * n
        v = [0.0] * n
        price, sigma, vmult = path.price, path.sigma, path.vmult
        sd = 0.00035 if secondary else 0.0
        d = spike = 0.0
        left = 0
        prev = price[0]
        for t in range(n):
            if secondary:
                d = 0.6 * d + sd * (rnd() + rnd() - 1.0) * _SQRT6
                if left > 0:
                    left -= 1
                    if left == 0:
                        spike = 0.0
                elif rnd() < 0.02:  # a venue falls out of line for a few bars
                    left = 2 + int(rnd() * 5)
                    spike = (0.0015 + 0.006 * rnd()) * (1.0 if rnd() < 0.5 else -1.0)
            close = price[t] * (1.0 + d + spike)
            sig = sigma[t]
            op = prev
            hi = (op if op > close else close) * (1.0 + sig * 0.8 * rnd())
            low = (op if op < close else close) * (1.0 - sig * 0.8 * rnd())
            move = abs(close / op - 1.0) / sig if sig > 0 and op > 0 else 0.0
            o[t] = op
            h[t] = hi
            lo[t] = low
            c[t] = close
            v[t] = base_volume * (0.6 + 0.8 * rnd()) * (1.0 + 0.6 * move) * vmult[t]
            prev = close
        return Bars(
            ts=self.ts, open=tuple(o), high=tuple(h), low=tuple(lo), close=tuple(c), volume=tuple(v)
        )

    def _carry(
        self,
        rng: random.Random,
        symbol: str,
        venue: str,
        bars: Bars,
        *,
        with_future: bool,
    ) -> None:
        """Perpetual funding every 8 hours (every bar if bars are longer), and maybe a future."""
        rnd = rng.random
        step = max(1, round(FUNDING_S / self.dt))
        scale = step * self.dt / FUNDING_S  # funding per interval, relative to an 8-hour one
        close = bars.close
        idx = list(range(step - 1, self.n, step))
        ts = tuple(self.ts[i] for i in idx)
        rates: list[float] = []
        rate = 0.0001
        extreme = 0.0
        lookback = max(1, round(86400 / self.dt))
        for i in idx:
            past = close[i - lookback] if i >= lookback else close[0]
            trend = close[i] / past - 1.0
            extreme *= 0.8
            if rnd() < 0.01:
                extreme += (0.0006 + 0.0015 * rnd()) * (1.0 if rnd() < 0.7 else -1.0)
            target = 0.0001 + 0.0018 * trend + extreme
            rate = 0.6 * rate + 0.4 * target + 0.00004 * (rnd() + rnd() - 1.0) * _SQRT6
            rates.append(rate * scale)
        self.funding[(symbol, venue)] = Funding(ts=ts, rate=tuple(rates))
        if not with_future:
            return
        expiry = START_TS + self.n * self.dt + (10 + int(rnd() * 80)) * 86400
        ann = 0.06 + 0.06 * rnd()
        shock = 0.0
        spot: list[float] = []
        future: list[float] = []
        for k, i in enumerate(idx):
            shock *= 0.85
            if rnd() < 0.012:
                shock += (0.15 + 0.3 * rnd()) * (1.0 if rnd() < 0.75 else -1.0)
            funding_ann = rates[k] / scale * 3 * 365
            ann = 0.8 * ann + 0.2 * (0.05 + 0.5 * funding_ann) + 0.01 * (rnd() - 0.5)
            days = (expiry - self.ts[i]) / 86400
            spot.append(close[i])
            future.append(close[i] * (1.0 + (ann + shock) * days / 365))
        self.basis[(symbol, venue)] = Basis(
            ts=ts, spot=tuple(spot), future=tuple(future), expiry_ts=(expiry,) * len(ts)
        )
