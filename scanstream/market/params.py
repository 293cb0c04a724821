"""`MarketParams`: the market part of the `params` object of `POST /v1/scans`.

Every field has a default, so `{}` is a valid request: the default synthetic universe.
Keys this Struct does not know are allowed and ignored here: strategies read their own
overrides from `params.<strategy name>` (see docs/strategies.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from scanstream.errors import InvalidRequest, split_validation_message
from scanstream.market.csv_root import Root, clean
from scanstream.market.data import MarketDataError
from scanstream.settings import CsvSettings

CSV_ROOT_ENV = "SCANSTREAM_CSV_ROOT"
# symbols x venues x bars of a synthetic market: bounds the memory (~120 bytes a bar) and the
# time (~1 us a bar) one request can make a process spend. The default universe is 36,000.
MAX_SYNTHETIC_BARS = 250_000

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD",
    "AVAX-USD", "DOT-USD", "LINK-USD", "LTC-USD", "BCH-USD", "ATOM-USD",
    "UNI-USD", "XLM-USD", "NEAR-USD", "APT-USD", "ARB-USD", "OP-USD",
    "FIL-USD", "ICP-USD", "ETC-USD", "AAVE-USD", "INJ-USD", "TRX-USD",
)  # fmt: skip
DEFAULT_VENUES: tuple[str, ...] = ("alpha", "beta", "gamma")

# Symbols and venues become file names of the CSV source: no path separators, no dot-dot.
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")]
Venue = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_\-]{0,31}$")]


class MarketParams(msgspec.Struct, frozen=True, kw_only=True):
    """Where a scan's market data comes from, and how fast strategies walk through it."""

    source: Literal["synthetic", "csv"] = "synthetic"
    # Synthetic source: the same seed and universe give bit-identical data on any machine.
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 42
    # None: the default universe (synthetic) or every file found (csv).
    symbols: Annotated[tuple[Symbol, ...], msgspec.Meta(min_length=1, max_length=200)] | None = None
    venues: Annotated[tuple[Venue, ...], msgspec.Meta(min_length=1, max_length=10)] | None = None
    bars: Annotated[int, msgspec.Meta(ge=50, le=5000)] = 500
    interval_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 3600
    # CSV source: a folder under SCANSTREAM_CSV_ROOT, as a path relative to it.
    csv_dir: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None = None
    # A pause each strategy takes per symbol, so a demo can be watched; 0 in production.
    pace_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 0
    # Taker fee per fill, in basis points: what arbitrage and carry strategies net out.
    fee_bps: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 10.0

    @property
    def fee(self) -> float:
        """The taker fee per fill as a fraction."""
        return self.fee_bps / 10_000.0


def parse_params(
    params: Mapping[str, Any] | None, *, csv_settings: CsvSettings | None = None
) -> MarketParams:
    """Validate the `params` object of a scan request.

    Raises `InvalidRequest` whose `field` names the offending field (`params.seed`,
    `params.symbols[3]`, ...). `csv_settings` (default: `CsvSettings.from_env()`) bounds where a
    CSV source may read: without a root the CSV source is refused, so a request can never
    make the server read an arbitrary folder. A CSV `csv_dir` comes back as a plain path
    relative to the root; what can only be known when the files are read is checked then.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InvalidRequest("params must be a JSON object", field="params")
    try:
        parsed = msgspec.convert(dict(params), MarketParams)
    except msgspec.ValidationError as exc:
        path, msg = split_validation_message(str(exc))
        field = "params" + path
        raise InvalidRequest(f"{field}: {msg}", field=field) from None
    for name in ("symbols", "venues"):
        values = getattr(parsed, name)
        if values is not None and len(set(values)) != len(values):
            dup = next(v for i, v in enumerate(values) if v in values[:i])
            raise InvalidRequest(f"params.{name}: {dup!r} is listed twice", field=f"params.{name}")
    if parsed.source == "csv":
        config = CsvSettings.from_env() if csv_settings is None else csv_settings
        return msgspec.structs.replace(parsed, csv_dir=_csv_dir(parsed.csv_dir, config))
    if parsed.csv_dir is not None:
        raise InvalidRequest("params.csv_dir: only used with source 'csv'", field="params.csv_dir")
    n_symbols = len(parsed.symbols or DEFAULT_SYMBOLS)
    n_venues = len(parsed.venues or DEFAULT_VENUES)
    if n_symbols * n_venues * parsed.bars > MAX_SYNTHETIC_BARS:
        raise InvalidRequest(
            f"params.bars: {n_symbols} symbols x {n_venues} venues x {parsed.bars} bars is over "
            f"the limit of {MAX_SYNTHETIC_BARS:,} bars; ask for fewer",
            field="params.bars",
        )
    return parsed


def _csv_dir(csv_dir: str | None, csv_settings: CsvSettings) -> str:
    """`csv_dir` checked as far as a request can be: as text, then looked up under the root
    (a folder that leads outside, loops or is missing is refused now, not at read time)."""
    if csv_dir is None:
        raise InvalidRequest("params.csv_dir: required with source 'csv'", field="params.csv_dir")
    if csv_settings.root is None:
        raise InvalidRequest(
            f"params.source: the csv source is disabled on this server ({CSV_ROOT_ENV} is not set)",
            field="params.source",
        )
    try:
        folder = clean(csv_dir)
        with Root(csv_settings.root) as root:
            root.require_folder(folder)
    except MarketDataError as exc:
        raise InvalidRequest(f"params.csv_dir: {exc}", field="params.csv_dir") from None
    return folder
