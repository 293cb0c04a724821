"""Indicator helpers over plain sequences of floats: pure Python, no I/O, no numpy.

Rolling indicators return a list as long as their input, with `nan` where the window is
not yet full (as pandas does), so `xs[-1]` and `indicator[-1]` refer to the same bar.
Check warm-up with `math.isnan` or by asking only for `len(xs) >= window` values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from operator import mul

NAN = math.nan


def sma(xs: Sequence[float], n: int) -> list[float]:
    """Simple moving average over `n` values."""
    _window(n)
    out = [NAN] * len(xs)
    if len(xs) < n:
        return out
    s = math.fsum(xs[:n])
    out[n - 1] = s / n
    for i in range(n, len(xs)):
        s += xs[i] - xs[i - n]
        out[i] = s / n
    return out


def ema(xs: Sequence[float], n: int) -> list[float]:
    """Exponential moving average, alpha 2/(n+1), seeded with the SMA of the first `n` values."""
    _window(n)
    out = [NAN] * len(xs)
    if len(xs) < n:
        return out
    alpha = 2.0 / (n + 1)
    e = math.fsum(xs[:n]) / n
    out[n - 1] = e
    for i in range(n, len(xs)):
        e += alpha * (xs[i] - e)
        out[i] = e
    return out


def wilder(xs: Sequence[float], n: int) -> list[float]:
    """Wilder's smoothing (alpha 1/n), seeded with the mean of the first `n` values."""
    _window(n)
    out = [NAN] * len(xs)
    if len(xs) < n:
        return out
    e = math.fsum(xs[:n]) / n
    out[n - 1] = e
    for i in range(n, len(xs)):
        e += (xs[i] - e) / n
        out[i] = e
    return out


def rolling_std(xs: Sequence[float], n: int) -> list[float]:
    """Population standard deviation over `n` values (shifted sums keep large prices exact)."""
    _window(n)
    out = [NAN] * len(xs)
    if len(xs) < n or n < 2:
        return out
    k = xs[0]
    s = sq = 0.0
    for i, x in enumerate(xs):
        d = x - k
        s += d
        sq += d * d
        if i >= n:
            old = xs[i - n] - k
            s -= old
            sq -= old * old
        if i >= n - 1:
            var = (sq - s * s / n) / n
            out[i] = math.sqrt(var) if var > 0 else 0.0
    return out


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else NAN


def std(xs: Sequence[float]) -> float:
    """Population standard deviation of all of `xs`."""
    if len(xs) < 2:
        return NAN
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) * (x - m) for x in xs) / len(xs))


def median(xs: Sequence[float]) -> float:
    if not xs:
        return NAN
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def zscore(xs: Sequence[float], n: int) -> float:
    """How many standard deviations the last value is from the mean of the last `n` values."""
    window = xs[-n:]
    if len(window) < n or n < 2:
        return NAN
    sd = std(window)
    return (window[-1] - mean(window)) / sd if sd > 0 else 0.0


def returns(xs: Sequence[float]) -> list[float]:
    """Simple returns, one fewer than the input."""
    return [b / a - 1.0 for a, b in itertools.pairwise(xs)]


def log_returns(xs: Sequence[float]) -> list[float]:
    """Log returns, one fewer than the input."""
    return [math.log(b / a) for a, b in itertools.pairwise(xs)]


def standardise(xs: Sequence[float]) -> list[float]:
    """`xs` minus its mean, over its norm: the dot product of two of these is their correlation."""
    m = mean(xs)
    d = [x - m for x in xs]
    norm = math.sqrt(sum(map(mul, d, d)))
    return [x / norm for x in d] if norm > 0 else [0.0] * len(d)


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation of two equally long sequences (0 when either is constant)."""
    if len(xs) != len(ys):
        raise ValueError("correlation needs sequences of equal length")
    if len(xs) < 2:
        return NAN
    return sum(map(mul, standardise(xs), standardise(ys)))


def ols(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares `ys ~ alpha + beta * xs`: returns (alpha, beta)."""
    mx, my = mean(xs), mean(ys)
    sxx = math.fsum((x - mx) * (x - mx) for x in xs)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    beta = sxy / sxx if sxx > 0 else 0.0
    return my - beta * mx, beta


def true_range(high: Sequence[float], low: Sequence[float], close: Sequence[float]) -> list[float]:
    out = [high[0] - low[0]] if high else []
    for i in range(1, len(high)):
        pc = close[i - 1]
        out.append(max(high[i] - low[i], abs(high[i] - pc), abs(low[i] - pc)))
    return out


def atr(
    high: Sequence[float], low: Sequence[float], close: Sequence[float], n: int = 14
) -> list[float]:
    """Average true range, Wilder-smoothed."""
    return wilder(true_range(high, low, close), n)


def rsi(close: Sequence[float], n: int = 14) -> list[float]:
    """Wilder's relative strength index, 0..100 (`nan` for the first `n` bars)."""
    _window(n)
    out = [NAN] * len(close)
    if len(close) <= n:
        return out
    gains = [max(b - a, 0.0) for a, b in itertools.pairwise(close)]
    losses = [max(a - b, 0.0) for a, b in itertools.pairwise(close)]
    g = math.fsum(gains[:n]) / n
    loss = math.fsum(losses[:n]) / n
    out[n] = _rsi(g, loss)
    for i in range(n, len(gains)):
        g += (gains[i] - g) / n
        loss += (losses[i] - loss) / n
        out[i + 1] = _rsi(g, loss)
    return out


def _rsi(gain: float, loss: float) -> float:
    if loss == 0:
        return 100.0 if gain > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def macd(
    close: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[list[float], list[float], list[float]]:
    """MACD line (EMA fast - EMA slow), its signal line (EMA of the line) and the histogram."""
    ef, es = ema(close, fast), ema(close, slow)
    line = [f - s for f, s in zip(ef, es, strict=True)]
    start = next((i for i, x in enumerate(line) if not math.isnan(x)), len(line))
    sig = [NAN] * start + ema(line[start:], signal)
    hist = [a - b for a, b in zip(line, sig, strict=True)]
    return line, sig, hist


def adx(
    high: Sequence[float], low: Sequence[float], close: Sequence[float], n: int = 14
) -> list[float]:
    """Wilder's average directional index, 0..100: trend strength whatever its direction."""
    size = len(close)
    out = [NAN] * size
    if size < 2 * n + 1:
        return out
    plus = [0.0]
    minus = [0.0]
    for i in range(1, size):
        up, down = high[i] - high[i - 1], low[i - 1] - low[i]
        plus.append(up if up > down and up > 0 else 0.0)
        minus.append(down if down > up and down > 0 else 0.0)
    tr = wilder(true_range(high, low, close)[1:], n)
    p = wilder(plus[1:], n)
    m = wilder(minus[1:], n)
    dx = [NAN] * len(tr)
    for i in range(n - 1, len(tr)):
        if tr[i] <= 0:
            dx[i] = 0.0
            continue
        di_p, di_m = 100.0 * p[i] / tr[i], 100.0 * m[i] / tr[i]
        total = di_p + di_m
        dx[i] = 100.0 * abs(di_p - di_m) / total if total > 0 else 0.0
    smoothed = wilder(dx[n - 1 :], n)
    for j, value in enumerate(smoothed):
        out[j + n] = value  # dx[k] is bar k+1; smoothed[j] is dx[j+n-1]
    return out


def donchian(
    high: Sequence[float], low: Sequence[float], n: int, end: int | None = None
) -> tuple[float, float]:
    """Highest high and lowest low of the `n` bars before index `end` (default: the last bar)."""
    end = len(high) - 1 if end is None else end
    if end - n < 0:
        return NAN, NAN
    return max(high[end - n : end]), min(low[end - n : end])


def vwap(
    high: Sequence[float],
    low: Sequence[float],
    close: Sequence[float],
    volume: Sequence[float],
    n: int,
) -> float:
    """Volume-weighted average of the typical price (h+l+c)/3 over the last `n` bars."""
    if len(close) < n:
        return NAN
    pv = vol = 0.0
    for i in range(len(close) - n, len(close)):
        pv += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        vol += volume[i]
    return pv / vol if vol > 0 else NAN


def percentile_rank(xs: Sequence[float], value: float) -> float:
    """The fraction of `xs` (ignoring nan) at or below `value`, 0..1."""
    valid = [x for x in xs if not math.isnan(x)]
    if not valid:
        return NAN
    return sum(1 for x in valid if x <= value) / len(valid)


def last_cross(a: Sequence[float], b: Sequence[float], within: int) -> tuple[int, int]:
    """The latest crossing of `a` and `b` in the last `within` bars.

    Returns (+1 for `a` crossing above, -1 below, 0 for none; how many bars ago).
    """
    last = len(a) - 1
    for i in range(last, max(1, len(a) - within) - 1, -1):
        prev, now = a[i - 1] - b[i - 1], a[i] - b[i]
        if math.isnan(prev) or math.isnan(now):
            break
        if prev <= 0 < now:
            return 1, last - i
        if prev >= 0 > now:
            return -1, last - i
    return 0, 0


def _window(n: int) -> None:
    if n < 1:
        raise ValueError(f"window must be at least 1, got {n}")
