"""CSV rows to market series: header and columns checked, then bars, funding and basis,
every value validated. Errors name the file (as given, relative to the CSV root) and the
line, and quote a bad value cut short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime

from scanstream.market.data import Bars, Basis, Funding, MarketDataError

BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS = ("ts", "symbol", "rate")
BASIS_COLUMNS = ("ts", "symbol", "spot", "future", "expiry_ts")

Row = tuple[int, dict[str, str]]  # (line number, values by column)
SHOWN_CHARS = 40  # of a bad value quoted in an error


def parse_rows(reader: Iterator[list[str]], where: str, columns: tuple[str, ...]) -> list[Row]:
    """The data rows of file `where`, each with its line number and the `columns` it needs."""
    header = next(reader, None)
    if header is None:
        raise MarketDataError(f"{where}: empty file (expected a header row: {','.join(columns)})")
    header = [h.strip().lower() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise MarketDataError(
            f"{where}: missing column {missing[0]!r} (header must include {','.join(columns)})"
        )
    pos = {c: header.index(c) for c in columns}
    rows: list[Row] = []
    for line, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) < len(header):
            raise MarketDataError(
                f"{where} line {line}: {len(record)} values, expected {len(header)}"
            )
        rows.append((line, {c: record[i].strip() for c, i in pos.items()}))
    if not rows:
        raise MarketDataError(f"{where}: no data rows")
    return rows


def _where(where: str, line: int) -> str:
    return f"{where} line {line}"


def _show(value: str) -> str:
    """A value from a file, quoted and cut short: an error is a sentence, not a dump."""
    return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "...")


def _ts(value: str, where: str, line: int, column: str = "ts") -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MarketDataError(
            f"{_where(where, line)}: {column} {_show(value)} "
            "is not epoch seconds or an RFC 3339 time"
        ) from None
    if dt.tzinfo is None:
        raise MarketDataError(f"{_where(where, line)}: {column} {_show(value)} has no time zone")
    return int(dt.timestamp())


def _num(
    value: str,
    where: str,
    line: int,
    column: str,
    check: Callable[[float], bool] | None = None,
    need: str = "",
) -> float:
    try:
        x = float(value)
    except ValueError:
        raise MarketDataError(
            f"{_where(where, line)}: {column} {_show(value)} is not a number"
        ) from None
    if not math.isfinite(x) or (check is not None and not check(x)):
        raise MarketDataError(
            f"{_where(where, line)}: {column} {_show(value)} must be {need or 'finite'}"
        )
    return x


def _positive(x: float) -> bool:
    return x > 0


def _increasing(ts: list[int], where: str, lines: list[int]) -> None:
    for i in range(1, len(ts)):
        if ts[i] <= ts[i - 1]:
            raise MarketDataError(
                f"{_where(where, lines[i])}: ts must increase (it does not after the row before)"
            )


def bars_of(rows: list[Row], where: str) -> Bars:
    ts: list[int] = []
    cols: dict[str, list[float]] = {c: [] for c in BAR_COLUMNS[1:]}
    for line, r in rows:
        ts.append(_ts(r["ts"], where, line))
        o, h, lo, c = (
            _num(r[k], where, line, k, _positive, "positive")
            for k in ("open", "high", "low", "close")
        )
        v = _num(r["volume"], where, line, "volume", lambda x: x >= 0, "zero or more")
        if h < max(o, c, lo) or lo > min(o, c):
            raise MarketDataError(f"{_where(where, line)}: high/low do not bracket open and close")
        for k, x in zip(BAR_COLUMNS[1:], (o, h, lo, c, v), strict=True):
            cols[k].append(x)
    _increasing(ts, where, [line for line, _ in rows])
    return Bars(ts=tuple(ts), **{k: tuple(v) for k, v in cols.items()})


def by_symbol(rows: list[Row], where: str) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for line, r in rows:
        if not r["symbol"]:
            raise MarketDataError(f"{_where(where, line)}: empty symbol")
        out.setdefault(r["symbol"], []).append((line, r))
    return out


def funding_of(rows: list[Row], where: str) -> Funding:
    ts = [_ts(r["ts"], where, line) for line, r in rows]
    _increasing(ts, where, [line for line, _ in rows])
    rate = tuple(
        _num(r["rate"], where, line, "rate", lambda x: abs(x) < 1, "a fraction between -1 and 1")
        for line, r in rows
    )
    return Funding(ts=tuple(ts), rate=rate)


def basis_of(rows: list[Row], where: str) -> Basis:
    ts = [_ts(r["ts"], where, line) for line, r in rows]
    _increasing(ts, where, [line for line, _ in rows])
    spot = tuple(_num(r["spot"], where, line, "spot", _positive, "positive") for line, r in rows)
    future = tuple(
        _num(r["future"], where, line, "future", _positive, "positive") for line, r in rows
    )
    expiry = tuple(_ts(r["expiry_ts"], where, line, "expiry_ts") for line, r in rows)
    for (line, _), t, e in zip(rows, ts, expiry, strict=True):
        if e <= t:
            raise MarketDataError(f"{_where(where, line)}: expiry_ts must be after ts")
    return Basis(ts=tuple(ts), spot=spot, future=future, expiry_ts=expiry)
