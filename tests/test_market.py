"""Market data: the synthetic and CSV sources, the params of a scan, the indicator helpers.

Pure tests: no Redis.
"""

from __future__ import annotations

import gc
import hashlib
import math
import multiprocessing
import os
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from scanstream.errors import InvalidRequest
from scanstream.market import (
    CACHE_SIZE,
    DEFAULT_SYMBOLS,
    DEFAULT_VENUES,
    CsvMarket,
    Market,
    MarketDataError,
    MarketParams,
    MarketShare,
    SyntheticMarket,
    build_market,
    market_for,
    parse_params,
    write_csv,
)
from scanstream.market import series as S
from scanstream.settings import CsvSettings


def data_digest(market: Market) -> str:
    """Every number of a market, hashed: equal digests mean bit-identical data."""
    h = hashlib.sha256()
    for symbol in market.symbols:
        for venue in market.venues_of(symbol):
            b = market.bars(symbol, venue)
            h.update(repr((symbol, venue, b.ts, b.open, b.high, b.low, b.close, b.volume)).encode())
            f = market.funding(symbol, venue)
            h.update(repr(f and (f.ts, f.rate)).encode())
            x = market.basis(symbol, venue)
            h.update(repr(x and (x.ts, x.spot, x.future, x.expiry_ts)).encode())
    return h.hexdigest()


def csv_params(root: Path, **extra: object) -> MarketParams:
    """The params of the CSV root `root` itself (csv_dir "."), checked against that root."""
    return parse_params({"source": "csv", "csv_dir": ".", **extra}, csv_settings=csv_at(root))


def csv_at(root: Path) -> CsvSettings:
    return CsvSettings(root=str(root))


def load_csv(root: Path, **extra: object) -> Market:
    """What a worker loads for the CSV root `root` itself."""
    return CsvMarket(csv_params(root, **extra), csv_at(root))


# --- synthetic source ---------------------------------------------------------------------


def test_same_params_give_identical_data() -> None:
    """Given one set of params, when the market is built twice, then every number matches."""
    first, second = SyntheticMarket(MarketParams(seed=7)), SyntheticMarket(MarketParams(seed=7))
    assert data_digest(first) == data_digest(second)
    assert first.fingerprint() == second.fingerprint()


def test_default_data_is_pinned() -> None:
    """Given the default params, when the market is built, then its data matches the pinned digest.

    The generator uses only exactly rounded arithmetic, so this holds on every machine; a
    deliberate change of the generator must bump GENERATOR_VERSION and this digest.
    """
    market = SyntheticMarket(MarketParams())
    assert data_digest(market) == PINNED_DIGEST


PINNED_DIGEST = "22181a0770c6c25049898fee7ee30f5b9400a6dc4ec665c53720536b59ecf372"


def test_seed_changes_data_and_fingerprint() -> None:
    """Given two seeds, when markets are built, then both the data and the fingerprints differ."""
    a, b = SyntheticMarket(MarketParams(seed=1)), SyntheticMarket(MarketParams(seed=2))
    assert data_digest(a) != data_digest(b)
    assert a.fingerprint() != b.fingerprint()


def test_pace_and_fee_do_not_change_the_fingerprint() -> None:
    """Given params differing in pace and fee only, when built, then the fingerprints match."""
    a = SyntheticMarket(MarketParams(seed=3))
    b = SyntheticMarket(MarketParams(seed=3, pace_ms=100, fee_bps=2))
    assert a.fingerprint() == b.fingerprint()


def test_default_universe_shape() -> None:
    """Given no universe, when the market is built, then it has 24 symbols, 3 venues, 500 bars."""
    market = SyntheticMarket(MarketParams())
    assert market.symbols == list(DEFAULT_SYMBOLS) and len(market.symbols) == 24
    assert market.venues == list(DEFAULT_VENUES)
    assert all(len(market.bars(s)) == 500 for s in market.symbols)
    assert all(market.venues_of(s)[0] == "alpha" for s in market.symbols)
    listings = [len(market.venues_of(s)) for s in market.symbols]
    assert 1 <= min(listings) < max(listings) == 3  # most symbols on every venue, not all
    assert all(market.funding(s, v) for s in market.symbols for v in market.venues_of(s))
    with_future = [s for s in market.symbols if market.basis(s, "alpha") is not None]
    assert 0 < len(with_future) < 24


def test_bars_are_well_formed() -> None:
    """Given a synthetic market, when its bars are read, then they are ordered, valid OHLC bars."""
    market = SyntheticMarket(MarketParams(seed=11, interval_s=900, bars=300))
    for symbol in market.symbols:
        for venue in market.venues_of(symbol):
            b = market.bars(symbol, venue)
            assert all(t1 - t0 == 900 for t0, t1 in zip(b.ts, b.ts[1:], strict=False))
            for o, h, lo, c, v in zip(b.open, b.high, b.low, b.close, b.volume, strict=True):
                assert 0 < lo <= min(o, c) and h >= max(o, c) and v > 0
    f = market.funding("BTC-USD", "alpha")
    assert f is not None and f.interval_h == 8.0


def test_custom_universe() -> None:
    """Given chosen symbols and venues, when the market is built, then it has exactly those."""
    market = SyntheticMarket(
        MarketParams(symbols=("AAA-USD", "BBB-USD"), venues=("x", "y"), bars=60)
    )
    assert market.symbols == ["AAA-USD", "BBB-USD"] and market.venues == ["x", "y"]
    assert len(market.bars("AAA-USD", "x")) == 60
    with pytest.raises(MarketDataError, match="ZZZ"):
        market.bars("ZZZ-USD")


def test_a_symbol_data_does_not_depend_on_the_rest_of_the_universe() -> None:
    """Given BTC alone and BTC among others, when built, then BTC's bars are the same."""
    alone = SyntheticMarket(MarketParams(symbols=("BTC-USD",), venues=("alpha",)))
    among = SyntheticMarket(MarketParams(symbols=("BTC-USD", "ETH-USD", "SOL-USD")))
    assert alone.bars("BTC-USD") == among.bars("BTC-USD")


def test_generation_is_fast() -> None:
    """Given the default params, when the market is built, then it takes well under a second."""
    started = time.perf_counter()
    SyntheticMarket(MarketParams(seed=99))
    assert time.perf_counter() - started < 0.5  # about 30 ms on a laptop; slack for slow CI


def test_market_for_shares_one_market_per_params() -> None:
    """Given equal params, when market_for is called twice, then the same object comes back."""
    p = parse_params({"seed": 123})
    assert market_for(p) is market_for(parse_params({"seed": 123}))
    assert market_for(parse_params({"seed": 124})) is not market_for(p)


def test_strategies_starting_together_share_one_build() -> None:
    """Given 14 threads asking at once for a market nobody built yet (a scan's 14 strategy
    threads), then they all get the one same market: it was built once, not 14 times."""
    p = parse_params({"seed": 98765, "bars": 600})
    start = threading.Barrier(14)
    got: list[object] = []

    def strategy() -> None:
        start.wait()
        got.append(market_for(p))

    threads = [threading.Thread(target=strategy) for _ in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 14
    assert len({id(m) for m in got}) == 1


def test_a_market_still_in_use_is_not_built_again_after_the_cache_moved_on() -> None:
    """Given a scan's market held by its running strategies, when more other markets are
    asked for than the cache keeps, then the scan's later strategies still get the very
    market the earlier ones hold (a rebuild would cost its CPU and its memory twice); and
    once nothing holds it and the cache has moved on, its memory is freed."""
    params = parse_params({"seed": 4242, "bars": 300})
    held = market_for(params)
    for seed in range(5000, 5000 + CACHE_SIZE + 2):
        market_for(parse_params({"seed": seed, "bars": 300}))
    assert market_for(params) is held
    gone = weakref.ref(held)
    del held
    for seed in range(6000, 6000 + CACHE_SIZE + 2):
        market_for(parse_params({"seed": seed, "bars": 300}))
    gc.collect()
    assert gone() is None


def _get_counted(folder: str, builds: str) -> str:
    """In a process of its own: the shared market of seed 777, noting each build."""

    def build() -> Market:
        (Path(builds) / f"build-{os.getpid()}").touch()
        time.sleep(0.3)  # the other processes ask meanwhile
        return build_market(parse_params({"seed": 777, "bars": 200}))

    return MarketShare(Path(folder)).get_or_build(("seed", 777), build).fingerprint()


def test_processes_sharing_a_folder_build_each_market_once(tmp_path: Path) -> None:
    """Given 4 strategy processes asking at once for a market nobody built (one scan's
    strategies in `process` isolation), then one of them builds it and the others load
    that build: one build, one market; a process asking later builds nothing."""
    folder, builds = tmp_path / "markets", tmp_path / "builds"
    folder.mkdir()
    builds.mkdir()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        for f in [pool.submit(time.sleep, 0) for _ in range(4)]:
            f.result()  # the processes are up before the race
        got = list(pool.map(_get_counted, [str(folder)] * 4, [str(builds)] * 4))
        again = pool.submit(_get_counted, str(folder), str(builds)).result()
    assert len(list(builds.iterdir())) == 1
    assert len({*got, again}) == 1
    assert got[0] == build_market(parse_params({"seed": 777, "bars": 200})).fingerprint()


# --- params -------------------------------------------------------------------------------


def test_empty_params_are_the_defaults() -> None:
    """Given no params, when parsed, then the defaults apply: synthetic, 500 bars, no pacing."""
    assert parse_params({}) == parse_params(None) == MarketParams()
    assert MarketParams().source == "synthetic" and MarketParams().bars == 500


def test_unknown_params_are_allowed() -> None:
    """Given params with keys for strategies, when parsed, then they are ignored here."""
    assert parse_params({"seed": 5, "rsi": {"upper": 80}, "mine": 1}).seed == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"seed": "x"}, "params.seed"),
        ({"seed": True}, "params.seed"),
        ({"seed": -1}, "params.seed"),
        ({"bars": 10}, "params.bars"),
        ({"bars": 5001}, "params.bars"),
        ({"bars": 5000, "symbols": [f"S{i}" for i in range(20)]}, "params.bars"),
        ({"pace_ms": 2001}, "params.pace_ms"),
        ({"source": "ftp"}, "params.source"),
        ({"symbols": []}, "params.symbols"),
        ({"symbols": ["BTC-USD", "../etc"]}, "params.symbols[1]"),
        ({"symbols": ["BTC-USD", "BTC-USD"]}, "params.symbols"),
        ({"venues": ["Alpha"]}, "params.venues[0]"),
        ({"fee_bps": -1}, "params.fee_bps"),
        ({"csv_dir": "/tmp"}, "params.csv_dir"),
        ({"source": "csv"}, "params.csv_dir"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, object], field: str) -> None:
    """Given a bad value, when params are parsed, then InvalidRequest names that field."""
    with pytest.raises(InvalidRequest) as info:
        parse_params(params)
    assert info.value.field == field
    assert field in info.value.detail


def test_params_must_be_an_object() -> None:
    """Given params that are not an object, when parsed, then the error names `params`."""
    with pytest.raises(InvalidRequest) as info:
        parse_params([1, 2])  # type: ignore[arg-type]
    assert info.value.field == "params"


def test_csv_source_is_refused_without_a_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no CSV root configured, when a CSV source is asked for, then it is refused."""
    monkeypatch.delenv("SCANSTREAM_CSV_ROOT", raising=False)
    with pytest.raises(InvalidRequest) as info:
        parse_params({"source": "csv", "csv_dir": "anything"})
    assert info.value.field == "params.source"


def test_csv_dir_must_stay_inside_the_root(tmp_path: Path) -> None:
    """Given a CSV root, when csv_dir points outside it or nowhere, then params.csv_dir is named."""
    (tmp_path / "root").mkdir()
    for bad in ("../", "/etc", "missing"):
        with pytest.raises(InvalidRequest) as info:
            parse_params({"source": "csv", "csv_dir": bad}, csv_settings=csv_at(tmp_path / "root"))
        assert info.value.field == "params.csv_dir"


def test_csv_dir_is_read_relative_to_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given SCANSTREAM_CSV_ROOT, when csv_dir is relative, then it resolves inside the root."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SCANSTREAM_CSV_ROOT", str(tmp_path))
    assert parse_params({"source": "csv", "csv_dir": "data/"}).csv_dir == "data"


# --- CSV source ---------------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    """Given a synthetic market written as CSV, when it is loaded, then every number matches."""
    source = SyntheticMarket(MarketParams(seed=5, bars=120))
    write_csv(source, tmp_path)
    loaded = load_csv(tmp_path, symbols=source.symbols)
    assert data_digest(loaded) == data_digest(source)
    assert loaded.venues == source.venues
    assert loaded.interval_s == 3600


def test_csv_fingerprint_follows_the_contents(tmp_path: Path) -> None:
    """Given a CSV folder, when loaded twice and then edited, then only the edit changes the id."""
    write_csv(SyntheticMarket(MarketParams(symbols=("AAA-USD",), venues=("x",), bars=50)), tmp_path)
    first = load_csv(tmp_path).fingerprint()
    assert load_csv(tmp_path).fingerprint() == first
    path = tmp_path / "x" / "AAA-USD.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert load_csv(tmp_path).fingerprint() != first


def test_csv_accepts_rfc3339_timestamps(tmp_path: Path) -> None:
    """Given bars with RFC 3339 times, when loaded, then ts are epoch seconds."""
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "AAA.csv").write_text(
        "ts,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00+00:00,1.5,2,1,1.2,11\n"
    )
    market = load_csv(tmp_path)
    assert market.bars("AAA").ts == (1_704_067_200, 1_704_070_800)
    assert market.funding("AAA", "v") is None and market.basis("AAA", "v") is None


BAD_FILES = [
    ("", "empty file"),
    ("ts,open,high,low,close\n1,1,1,1,1\n", "missing column 'volume'"),
    ("ts,open,high,low,close,volume\n", "no data rows"),
    ("ts,open,high,low,close,volume\n1,1,1,1,abc,5\n", "line 2: close 'abc' is not a number"),
    ("ts,open,high,low,close,volume\n1,1,1,1,1,5\n1,1,1,1,1,5\n", "line 3: ts must increase"),
    ("ts,open,high,low,close,volume\n1,1,0.5,2,1,5\n", "line 2: high/low do not bracket"),
    ("ts,open,high,low,close,volume\n1,-1,1,1,1,5\n", "line 2: open '-1' must be positive"),
    ("ts,open,high,low,close,volume\n1,1,1,1,1,nan\n", "line 2: volume 'nan' must be"),
    ("ts,open,high,low,close,volume\nyesterday,1,1,1,1,5\n", "line 2: ts 'yesterday'"),
    ("ts,open,high,low,close,volume\n1,1,1\n", "line 2: 3 values, expected 6"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_malformed_csv_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """Given a malformed bar file, when loaded, then the error names the file, line and problem."""
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "AAA.csv").write_text(content)
    with pytest.raises(MarketDataError) as info:
        load_csv(tmp_path)
    assert "AAA.csv" in str(info.value) and message in str(info.value)


def test_malformed_funding_and_basis_are_clear_errors(tmp_path: Path) -> None:
    """Given a bad funding or basis file, when loaded, then the error names it and the line."""
    write_csv(SyntheticMarket(MarketParams(symbols=("AAA-USD",), venues=("x",), bars=50)), tmp_path)
    (tmp_path / "x" / "funding.csv").write_text("ts,symbol,rate\n1,AAA-USD,2.5\n")
    with pytest.raises(MarketDataError, match=r"funding.csv line 2: rate"):
        load_csv(tmp_path)
    (tmp_path / "x" / "funding.csv").unlink()
    (tmp_path / "x" / "basis.csv").write_text(
        "ts,symbol,spot,future,expiry_ts\n100,AAA-USD,1,1.1,50\n"
    )
    with pytest.raises(MarketDataError, match=r"basis.csv line 2: expiry_ts must be after ts"):
        load_csv(tmp_path)


def test_csv_folder_problems_are_clear_errors(tmp_path: Path) -> None:
    """Given an empty folder or a missing symbol, when loaded, then the error names the gap."""
    with pytest.raises(MarketDataError, match="no venue folders"):
        load_csv(tmp_path)
    write_csv(SyntheticMarket(MarketParams(symbols=("AAA-USD",), venues=("x",), bars=50)), tmp_path)
    with pytest.raises(MarketDataError, match="no bars for symbol 'BBB-USD'"):
        load_csv(tmp_path, symbols=["BBB-USD"])
    with pytest.raises(MarketDataError, match="no venue folder 'y'"):
        load_csv(tmp_path, venues=["y"])


def test_market_for_reads_an_edited_csv_folder_again(tmp_path: Path) -> None:
    """Given a cached CSV market, when a file changes, then market_for loads the folder again."""
    write_csv(SyntheticMarket(MarketParams(symbols=("AAA-USD",), venues=("x",), bars=50)), tmp_path)
    params = csv_params(tmp_path)
    first = market_for(params, csv_at(tmp_path))
    assert market_for(params, csv_at(tmp_path)) is first
    path = tmp_path / "x" / "AAA-USD.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    assert len(market_for(params, csv_at(tmp_path)).bars("AAA-USD")) == 49


# --- indicator helpers --------------------------------------------------------------------


def test_moving_averages() -> None:
    """Given a short series, when averaged, then SMA and EMA match hand-computed values."""
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert S.sma(xs, 3)[2:] == [2.0, 3.0, 4.0] and math.isnan(S.sma(xs, 3)[1])
    assert S.ema(xs, 3)[2:] == [2.0, 3.0, 4.0]  # seeded with the SMA, alpha 0.5
    assert S.wilder([2.0, 2.0, 5.0], 2)[1:] == [2.0, 3.5]


def test_dispersion_helpers() -> None:
    """Given known series, when measured, then std, rolling std, z-score and median are right."""
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert S.std(xs) == 2.0
    assert S.rolling_std([100.0, *xs], 8)[-1] == pytest.approx(2.0)
    assert S.zscore(xs, 8) == pytest.approx((9 - 5) / 2)
    assert S.median([3.0, 1.0, 2.0]) == 2.0 and S.median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_correlation_and_regression() -> None:
    """Given y = 2x + 1, when related, then correlation is 1 and OLS recovers the line."""
    xs = [1.0, 3.0, 2.0, 5.0, 4.0]
    ys = [2 * x + 1 for x in xs]
    assert S.correlation(xs, ys) == pytest.approx(1.0)
    assert S.correlation(xs, [-y for y in ys]) == pytest.approx(-1.0)
    assert S.ols(xs, ys) == pytest.approx((1.0, 2.0))


def test_rsi_extremes() -> None:
    """Given a series that only rises (or only falls), when RSI is taken, then it is 100 (or 0)."""
    up = [float(i) for i in range(1, 30)]
    assert S.rsi(up, 14)[-1] == 100.0
    assert S.rsi(up[::-1], 14)[-1] == 0.0
    assert math.isnan(S.rsi(up, 14)[13]) and not math.isnan(S.rsi(up, 14)[14])


def test_macd_and_crosses() -> None:
    """Given a fall then a rise, when MACD is taken, then its line crosses its signal upward."""
    close = [100.0 - i for i in range(40)] + [60.0 + 2 * i for i in range(15)]
    line, signal, hist = S.macd(close, 12, 26, 9)
    assert len(line) == len(signal) == len(hist) == len(close)
    direction, ago = S.last_cross(line, signal, 15)
    assert direction == 1 and 0 <= ago < 15
    assert S.last_cross([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 2) == (0, 0)


def test_range_indicators() -> None:
    """Given steady bars, when ATR, ADX, Donchian and VWAP are taken, then they are as expected."""
    n = 60
    close = [100.0 + i for i in range(n)]
    high = [c + 1 for c in close]
    low = [c - 1 for c in close]
    assert S.atr(high, low, close, 14)[-1] == pytest.approx(2.0)
    assert S.adx(high, low, close, 14)[-1] == pytest.approx(100.0)  # a perfect uptrend
    assert S.donchian(high, low, 5) == (high[-2], low[-6])
    assert S.vwap(high, low, close, [1.0] * n, 3) == pytest.approx(sum(close[-3:]) / 3)
    assert S.percentile_rank([1.0, 2.0, 3.0, 4.0], 2.0) == 0.5


def test_a_fifo_in_the_csv_folder_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Given a FIFO named like a bar file in a venue folder, loading the folder fails at
    once naming that file, instead of blocking on it for ever."""
    write_csv(SyntheticMarket(MarketParams(symbols=("AAA-USD",), venues=("x",), bars=50)), tmp_path)
    os.mkfifo(tmp_path / "x" / "BBB-USD.csv")
    with pytest.raises(MarketDataError, match=r"x/BBB-USD.csv: not a regular file"):
        load_csv(tmp_path)
