"""Market data from a folder of CSV files.

Layout (one sub-folder per venue; every file has a header row, columns in any order,
extra columns ignored; `ts` is integer epoch seconds or an RFC 3339 time):

    <csv_dir>/<venue>/<SYMBOL>.csv    ts,open,high,low,close,volume
    <csv_dir>/<venue>/funding.csv     ts,symbol,rate             (optional: perpetual funding
                                                                   per interval, e.g. 8 hours)
    <csv_dir>/<venue>/basis.csv       ts,symbol,spot,future,expiry_ts  (optional: dated futures)

Rows are oldest first with strictly increasing `ts` (per symbol in funding and basis).
The fingerprint hashes every file's contents, so ids change exactly when the data does.
`write_csv` writes any `Market` in this layout (floats in full precision, so it round-trips).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from scanstream.market.data import Bars, Basis, Funding, Market, MarketDataError, digest
from scanstream.market.params import MarketParams

FORMAT_VERSION = "csv/1"
FUNDING_FILE = "funding.csv"
BASIS_FILE = "basis.csv"
MAX_FILE_BYTES = 64 * 1024 * 1024
BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS = ("ts", "symbol", "rate")
BASIS_COLUMNS = ("ts", "symbol", "spot", "future", "expiry_ts")


def CsvMarket(params: MarketParams) -> Market:
    """Load the folder `params.csv_dir` (see the module docstring for the layout)."""
    if params.csv_dir is None:
        raise MarketDataError("the csv source needs csv_dir")
    root = Path(params.csv_dir)
    if not root.is_dir():
        raise MarketDataError(f"CSV folder {root} does not exist")
    venue_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if params.venues is not None:
        found = {p.name for p in venue_dirs}
        missing = [v for v in params.venues if v not in found]
        if missing:
            raise MarketDataError(f"CSV folder {root} has no venue folder {missing[0]!r}")
        venue_dirs = [root / v for v in params.venues]
    if not venue_dirs:
        raise MarketDataError(
            f"CSV folder {root} has no venue folders (expected <venue>/<SYMBOL>.csv)"
        )

    wanted = set(params.symbols) if params.symbols is not None else None
    hashes: list[str] = []
    bars: dict[tuple[str, str], Bars] = {}
    funding: dict[tuple[str, str], Funding] = {}
    basis: dict[tuple[str, str], Basis] = {}
    for vdir in venue_dirs:
        venue = vdir.name
        for path in sorted(vdir.glob("*.csv")):
            if path.name in (FUNDING_FILE, BASIS_FILE):
                continue
            symbol = path.stem
            if wanted is not None and symbol not in wanted:
                continue
            rows = _read(path, root, BAR_COLUMNS, hashes)
            bars[(symbol, venue)] = _bars(rows, path)
        for name, columns in ((FUNDING_FILE, FUNDING_COLUMNS), (BASIS_FILE, BASIS_COLUMNS)):
            path = vdir / name
            if not path.is_file():
                continue
            rows = _read(path, root, columns, hashes)
            for symbol, group in _by_symbol(rows, path).items():
                if wanted is not None and symbol not in wanted:
                    continue
                if name == FUNDING_FILE:
                    funding[(symbol, venue)] = _funding(group, path)
                else:
                    basis[(symbol, venue)] = _basis(group, path)

    present = {s for s, _ in bars}
    if params.symbols is not None:
        missing = [s for s in params.symbols if s not in present]
        if missing:
            raise MarketDataError(f"CSV folder {root} has no bars for symbol {missing[0]!r}")
        symbols = list(params.symbols)
    else:
        symbols = sorted(present)
    if not symbols:
        raise MarketDataError(f"CSV folder {root} has no bar files (expected <venue>/<SYMBOL>.csv)")
    venues = [p.name for p in venue_dirs]
    fingerprint = digest(FORMAT_VERSION, ",".join(symbols), ",".join(venues), *hashes)
    return Market(
        params=params,
        symbols=symbols,
        venues=venues,
        bars=bars,
        funding=funding,
        basis=basis,
        fingerprint=fingerprint,
    )


def csv_signature(folder: str) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection for caching: (path, size, mtime) of every CSV file under `folder`."""
    out = []
    for path in sorted(Path(folder).glob("*/*.csv")):
        st = path.stat()
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


def write_csv(market: Market, folder: str | Path) -> Path:
    """Write `market` in the layout `CsvMarket` reads; returns the folder."""
    root = Path(folder)
    for venue in market.venues:
        vdir = root / venue
        vdir.mkdir(parents=True, exist_ok=True)
        funding_rows: list[tuple[object, ...]] = []
        basis_rows: list[tuple[object, ...]] = []
        for symbol in market.symbols:
            if venue not in market.venues_of(symbol):
                continue
            b = market.bars(symbol, venue)
            _write(
                vdir / f"{symbol}.csv",
                BAR_COLUMNS,
                zip(b.ts, b.open, b.high, b.low, b.close, b.volume, strict=True),
            )
            f = market.funding(symbol, venue)
            if f is not None:
                funding_rows.extend((t, symbol, r) for t, r in zip(f.ts, f.rate, strict=True))
            x = market.basis(symbol, venue)
            if x is not None:
                basis_rows.extend(
                    (t, symbol, s, fu, e)
                    for t, s, fu, e in zip(x.ts, x.spot, x.future, x.expiry_ts, strict=True)
                )
        if funding_rows:
            _write(vdir / FUNDING_FILE, FUNDING_COLUMNS, funding_rows)
        if basis_rows:
            _write(vdir / BASIS_FILE, BASIS_COLUMNS, basis_rows)
    return root


def _write(path: Path, header: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(tuple(repr(x) if isinstance(x, float) else x for x in row) for row in rows)


Row = tuple[int, dict[str, str]]  # (line number, values by column)


def _read(path: Path, root: Path, columns: tuple[str, ...], hashes: list[str]) -> list[Row]:
    name = str(path.relative_to(root))
    raw = _read_regular_file(path, name)
    hashes.append(name + ":" + hashlib.sha256(raw).hexdigest())
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MarketDataError(f"{name}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise MarketDataError(f"{name}: empty file (expected a header row: {','.join(columns)})")
    header = [h.strip().lower() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise MarketDataError(
            f"{name}: missing column {missing[0]!r} (header must include {','.join(columns)})"
        )
    pos = {c: header.index(c) for c in columns}
    rows: list[Row] = []
    for line, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) < len(header):
            raise MarketDataError(
                f"{name} line {line}: {len(record)} values, expected {len(header)}"
            )
        rows.append((line, {c: record[i].strip() for c, i in pos.items()}))
    if not rows:
        raise MarketDataError(f"{name}: no data rows")
    return rows


def _read_regular_file(path: Path, name: str) -> bytes:
    """The bytes of a regular file, checked on the open descriptor.

    Opened non-blocking and checked before reading: a FIFO (or a device) named like a CSV
    file would otherwise block its reader for ever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise MarketDataError(f"{name}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MarketDataError(f"{name}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise MarketDataError(
                f"{name}: {st.st_size} bytes, over the {MAX_FILE_BYTES} byte limit"
            )
        return fh.read(MAX_FILE_BYTES + 1)


def _where(path: Path, line: int) -> str:
    return f"{path.parent.name}/{path.name} line {line}"


def _ts(value: str, path: Path, line: int, column: str = "ts") -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MarketDataError(
            f"{_where(path, line)}: {column} {value!r} is not epoch seconds or an RFC 3339 time"
        ) from None
    if dt.tzinfo is None:
        raise MarketDataError(f"{_where(path, line)}: {column} {value!r} has no time zone")
    return int(dt.timestamp())


def _num(
    value: str,
    path: Path,
    line: int,
    column: str,
    check: Callable[[float], bool] | None = None,
    need: str = "",
) -> float:
    try:
        x = float(value)
    except ValueError:
        raise MarketDataError(f"{_where(path, line)}: {column} {value!r} is not a number") from None
    if not math.isfinite(x) or (check is not None and not check(x)):
        raise MarketDataError(
            f"{_where(path, line)}: {column} {value!r} must be {need or 'finite'}"
        )
    return x


def _positive(x: float) -> bool:
    return x > 0


def _increasing(ts: list[int], path: Path, lines: list[int]) -> None:
    for i in range(1, len(ts)):
        if ts[i] <= ts[i - 1]:
            raise MarketDataError(
                f"{_where(path, lines[i])}: ts must increase (it does not after the row before)"
            )


def _bars(rows: list[Row], path: Path) -> Bars:
    ts: list[int] = []
    cols: dict[str, list[float]] = {c: [] for c in BAR_COLUMNS[1:]}
    for line, r in rows:
        ts.append(_ts(r["ts"], path, line))
        o, h, lo, c = (
            _num(r[k], path, line, k, _positive, "positive")
            for k in ("open", "high", "low", "close")
        )
        v = _num(r["volume"], path, line, "volume", lambda x: x >= 0, "zero or more")
        if h < max(o, c, lo) or lo > min(o, c):
            raise MarketDataError(f"{_where(path, line)}: high/low do not bracket open and close")
        for k, x in zip(BAR_COLUMNS[1:], (o, h, lo, c, v), strict=True):
            cols[k].append(x)
    _increasing(ts, path, [line for line, _ in rows])
    return Bars(ts=tuple(ts), **{k: tuple(v) for k, v in cols.items()})


def _by_symbol(rows: list[Row], path: Path) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for line, r in rows:
        if not r["symbol"]:
            raise MarketDataError(f"{_where(path, line)}: empty symbol")
        out.setdefault(r["symbol"], []).append((line, r))
    return out


def _funding(rows: list[Row], path: Path) -> Funding:
    ts = [_ts(r["ts"], path, line) for line, r in rows]
    _increasing(ts, path, [line for line, _ in rows])
    rate = tuple(
        _num(r["rate"], path, line, "rate", lambda x: abs(x) < 1, "a fraction between -1 and 1")
        for line, r in rows
    )
    return Funding(ts=tuple(ts), rate=rate)


def _basis(rows: list[Row], path: Path) -> Basis:
    ts = [_ts(r["ts"], path, line) for line, r in rows]
    _increasing(ts, path, [line for line, _ in rows])
    spot = tuple(_num(r["spot"], path, line, "spot", _positive, "positive") for line, r in rows)
    future = tuple(
        _num(r["future"], path, line, "future", _positive, "positive") for line, r in rows
    )
    expiry = tuple(_ts(r["expiry_ts"], path, line, "expiry_ts") for line, r in rows)
    for (line, _), t, e in zip(rows, ts, expiry, strict=True):
        if e <= t:
            raise MarketDataError(f"{_where(path, line)}: expiry_ts must be after ts")
    return Basis(ts=tuple(ts), spot=spot, future=future, expiry_ts=expiry)
