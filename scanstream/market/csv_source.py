"""Market data from a folder of CSV files.

Layout (one sub-folder per venue; every file has a header row, columns in any order,
extra columns ignored; `ts` is integer epoch seconds or an RFC 3339 time):

    <csv_dir>/<venue>/<SYMBOL>.csv    ts,open,high,low,close,volume
    <csv_dir>/<venue>/funding.csv     ts,symbol,rate             (optional: perpetual funding
                                                                   per interval, e.g. 8 hours)
    <csv_dir>/<venue>/basis.csv       ts,symbol,spot,future,expiry_ts  (optional: dated futures)

Rows are oldest first with strictly increasing `ts` (per symbol in funding and basis).
The fingerprint hashes every file's contents, so ids change exactly when the data does.
`csv_dir` is a folder under the CSV root, and every lookup and read goes through
`csv_root.Root`: nothing outside the root is read, only regular files, each up to
`SCANSTREAM_CSV_MAX_FILE_BYTES`. Errors name files relative to the root, with the line.
`write_csv` writes any `Market` in this layout (floats in full precision, so it round-trips).
"""

from __future__ import annotations

import csv
import hashlib
import io
import stat
from collections.abc import Iterable
from pathlib import Path

from scanstream.market.csv_root import PathMissing, Root, clean, join
from scanstream.market.csv_rows import (
    BAR_COLUMNS,
    BASIS_COLUMNS,
    FUNDING_COLUMNS,
    Row,
    bars_of,
    basis_of,
    by_symbol,
    funding_of,
    parse_rows,
)
from scanstream.market.data import Bars, Basis, Funding, Market, MarketDataError, digest
from scanstream.market.params import CSV_ROOT_ENV, MarketParams
from scanstream.settings import CsvSettings

FORMAT_VERSION = "csv/1"
FUNDING_FILE = "funding.csv"
BASIS_FILE = "basis.csv"


def CsvMarket(params: MarketParams, csv_settings: CsvSettings | None = None) -> Market:
    """Load the folder `params.csv_dir` under the CSV root (see the module docstring for the
    layout). `csv_settings` defaults to `CsvSettings.from_env()`."""
    config = CsvSettings.from_env() if csv_settings is None else csv_settings
    wanted = set(params.symbols) if params.symbols is not None else None
    hashes: list[str] = []
    bars: dict[tuple[str, str], Bars] = {}
    funding: dict[tuple[str, str], Funding] = {}
    basis: dict[tuple[str, str], Basis] = {}
    with open_root(config) as root:
        folder, layout = _layout(root, params)
        for venue, names in layout:
            for name in names:
                rows = _read(root, folder, venue, name, hashes, config.max_file_bytes)
                where = join(folder, venue, name)
                if name == FUNDING_FILE:
                    for symbol, group in by_symbol(rows, where).items():
                        if wanted is None or symbol in wanted:
                            funding[(symbol, venue)] = funding_of(group, where)
                elif name == BASIS_FILE:
                    for symbol, group in by_symbol(rows, where).items():
                        if wanted is None or symbol in wanted:
                            basis[(symbol, venue)] = basis_of(group, where)
                else:
                    bars[(name.removesuffix(".csv"), venue)] = bars_of(rows, where)

    present = {s for s, _ in bars}
    if params.symbols is not None:
        missing = [s for s in params.symbols if s not in present]
        if missing:
            raise MarketDataError(f"{_label(folder)} has no bars for symbol {missing[0]!r}")
        symbols = list(params.symbols)
    else:
        symbols = sorted(present)
    if not symbols:
        raise MarketDataError(f"{_label(folder)} has no bar files (expected <venue>/<SYMBOL>.csv)")
    venues = [venue for venue, _ in layout]
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


def csv_signature(
    params: MarketParams, csv_settings: CsvSettings | None = None
) -> tuple[tuple[str, int, int, int], ...]:
    """Cheap change detection for caching: (name, size, mtime, inode) of every file
    `CsvMarket` would read, looked up as confined as the reads themselves."""
    config = CsvSettings.from_env() if csv_settings is None else csv_settings
    out = []
    with open_root(config) as root:
        folder, layout = _layout(root, params)
        for venue, names in layout:
            for name in names:
                st = root.stat(join(folder, venue, name))
                out.append((join(venue, name), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def open_root(csv_settings: CsvSettings) -> Root:
    """The CSV root, open; `MarketDataError` when the CSV source is off."""
    if csv_settings.root is None:
        raise MarketDataError(
            f"the csv source is disabled on this server ({CSV_ROOT_ENV} is not set)"
        )
    return Root(csv_settings.root)


def _label(folder: str) -> str:
    return "the CSV root" if folder == "." else f"CSV folder {folder!r}"


Layout = list[tuple[str, list[str]]]  # (venue, its CSV file names to read), in order


def _layout(root: Root, params: MarketParams) -> tuple[str, Layout]:
    """The folder (relative to the root) and the files of it that `params` select."""
    if params.csv_dir is None:
        raise MarketDataError("the csv source needs csv_dir")
    folder = clean(params.csv_dir)
    root.require_folder(folder)
    if params.venues is not None:
        venues = list(params.venues)
        for venue in venues:
            if not _is_dir(root, join(folder, venue)):
                raise MarketDataError(f"{_label(folder)} has no venue folder {venue!r}")
    else:
        venues = [
            name
            for name in root.listdir(folder)
            if not name.startswith(".") and _is_dir(root, join(folder, name))
        ]
    if not venues:
        raise MarketDataError(
            f"{_label(folder)} has no venue folders (expected <venue>/<SYMBOL>.csv)"
        )
    wanted = set(params.symbols) if params.symbols is not None else None
    layout: Layout = []
    for venue in venues:
        names = [n for n in root.listdir(join(folder, venue)) if n.endswith(".csv")]
        bar_files = [
            n
            for n in names
            if n not in (FUNDING_FILE, BASIS_FILE)
            and (wanted is None or n.removesuffix(".csv") in wanted)
        ]
        extras = [n for n in (FUNDING_FILE, BASIS_FILE) if n in names]
        layout.append((venue, bar_files + extras))
    return folder, layout


def _is_dir(root: Root, rel: str) -> bool:
    try:
        return stat.S_ISDIR(root.stat(rel).st_mode)
    except PathMissing:
        return False  # no such venue: the caller says which one is missing


def _read(
    root: Root, folder: str, venue: str, name: str, hashes: list[str], max_bytes: int
) -> list[Row]:
    where = join(folder, venue, name)
    columns = {FUNDING_FILE: FUNDING_COLUMNS, BASIS_FILE: BASIS_COLUMNS}.get(name, BAR_COLUMNS)
    raw = root.read(where, max_bytes)
    # Named from the folder, not the root: the same data elsewhere gives the same ids.
    hashes.append(f"{venue}/{name}:" + hashlib.sha256(raw).hexdigest())
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MarketDataError(f"{where}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    try:
        return parse_rows(reader, where, columns)
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
        raise MarketDataError(f"{where} line {reader.line_num}: not CSV ({exc})") from None


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
