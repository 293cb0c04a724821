"""The built-in strategies, the strategy registry and the documented example module.

Pure tests: no Redis. Strategies run against `RecordingContext`, a `StrategyContext` that
keeps what a strategy reports, which is all a strategy can see of the system around it.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from scanstream.errors import InvalidRequest, StrategyLoadError
from scanstream.events import Opportunity
from scanstream.market import (
    Market,
    MarketParams,
    SyntheticMarket,
    load_market,
    market_for,
    parse_params,
    write_csv,
)
from scanstream.settings import CsvSettings
from scanstream.strategies import (
    Strategy,
    StrategyStopped,
    builtin_strategies,
    check_params,
    load_strategies,
    make_opportunity,
    opportunity_id,
)

pytestmark = pytest.mark.anyio

BUILTIN_NAMES = [
    "momentum",
    "mean_reversion",
    "breakout",
    "rsi",
    "macd_cross",
    "bollinger_squeeze",
    "volume_spike",
    "pairs_spread",
    "cross_venue_arbitrage",
    "funding_carry",
    "basis_carry",
    "trend_following",
    "vwap_deviation",
    "relative_strength",
]


class RecordingContext:
    """A `StrategyContext` that records progress and findings, and can stop the strategy."""

    def __init__(
        self,
        strategy: str,
        params: Mapping[str, Any] | None = None,
        market: Market | None = None,
        *,
        stop_after: int | None = None,
    ) -> None:
        self.scan_id = "scan_" + "0" * 32
        self.strategy = strategy
        self.attempt = 1
        self.params: Mapping[str, Any] = dict(params or {})
        self._market = market
        self.stop_after = stop_after
        self.progress_log: list[tuple[float, str]] = []
        self.found_log: list[Opportunity] = []

    @property
    def market(self) -> Market | None:
        return self._market

    @property
    def cancelled(self) -> bool:
        return self.stop_after is not None and len(self.progress_log) >= self.stop_after

    async def progress(self, fraction: float, message: str = "") -> None:
        if self.cancelled:
            raise StrategyStopped("cancelled by the test")
        self.progress_log.append((fraction, message))

    async def found(self, opportunity: Opportunity) -> None:
        self.found_log.append(opportunity)

    def opportunity(self, **fields: Any) -> Opportunity:
        market = self._market or market_for(parse_params(self.params))
        return make_opportunity(strategy=self.strategy, fingerprint=market.fingerprint(), **fields)


async def run(
    name: str,
    params: Mapping[str, Any] | None = None,
    market: Market | None = None,
    *,
    strategies: Mapping[str, Strategy] | None = None,
    stop_after: int | None = None,
) -> RecordingContext:
    """Run the strategy `name` on `market` (default: the one `params` describe)."""
    strategies = strategies or builtin_strategies()
    if market is None:
        market = market_for(parse_params(params or {}))
    ctx = RecordingContext(name, params, market, stop_after=stop_after)
    await strategies[name].run(ctx)
    return ctx


def findings_without_ids(ctx: RecordingContext) -> list[tuple[Any, ...]]:
    return [(o.symbol, o.side, o.score, o.expected_return, o.details) for o in ctx.found_log]


def assert_valid(ctx: RecordingContext, name: str) -> None:
    """The findings are well-formed opportunities and progress climbs to the end."""
    fractions = [f for f, _ in ctx.progress_log]
    assert 5 <= len(fractions) <= 60, f"{name}: {len(fractions)} progress events"
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] >= 0.99
    assert all(message for _, message in ctx.progress_log)
    ids = [o.id for o in ctx.found_log]
    assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
    for o in ctx.found_log:
        assert msgspec.convert(msgspec.to_builtins(o), Opportunity) == o  # the schema holds
        assert o.strategy == name and o.id.startswith("opp_")
        assert o.side in ("long", "short", "neutral")
        assert 0.0 <= o.score <= 1.0 and math.isfinite(o.expected_return)
        assert o.details and all(
            not isinstance(v, float) or math.isfinite(v) for v in o.details.values()
        )
        msgspec.json.encode(o)  # details are JSON


# --- the built-ins --------------------------------------------------------------------------


def test_exactly_fourteen_builtins_in_a_stable_order() -> None:
    """Given the built-ins, when listed, then they are the 14 named strategies in a fixed order."""
    builtins = builtin_strategies()
    assert list(builtins) == BUILTIN_NAMES
    for name, s in builtins.items():
        assert isinstance(s, Strategy) and s.name == name
        assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name)
        assert len(s.description) > 40


@pytest.mark.parametrize("name", BUILTIN_NAMES)
async def test_builtin_reports_progress_and_valid_findings(name: str) -> None:
    """Given the default market, when a built-in runs, then progress ends at 1, findings valid."""
    ctx = await run(name)
    assert_valid(ctx, name)
    assert len(ctx.found_log) <= 12


@pytest.mark.parametrize("name", BUILTIN_NAMES)
async def test_builtin_is_deterministic(name: str) -> None:
    """Given two markets from the same params, when a built-in runs on each, then findings match."""
    params = {"seed": 9}
    first = await run(name, params, SyntheticMarket(parse_params(params)))
    second = await run(name, params, SyntheticMarket(parse_params(params)))
    assert first.found_log == second.found_log
    assert first.progress_log == second.progress_log


@pytest.mark.parametrize("name", BUILTIN_NAMES)
async def test_builtin_lets_a_stop_propagate(name: str) -> None:
    """Given a context that stops the run, when progress is sent, then StrategyStopped escapes."""
    with pytest.raises(StrategyStopped):
        await run(name, stop_after=2)


async def test_default_scan_finds_a_real_table() -> None:
    """Given the default market, when all 14 run, then most find something, 10 to 60 in all."""
    counts = {name: len((await run(name)).found_log) for name in BUILTIN_NAMES}
    assert 10 <= sum(counts.values()) <= 60, counts
    assert sum(1 for c in counts.values() if c) >= 8, counts


async def test_full_scan_is_fast() -> None:
    """Given a fresh default market, when all 14 run, then they take well under a second."""
    market = SyntheticMarket(MarketParams(seed=4242))
    started = time.perf_counter()
    for name in BUILTIN_NAMES:
        await run(name, {"seed": 4242}, market)
    assert time.perf_counter() - started < 1.0  # about 50 ms on a laptop; slack for slow CI


async def test_ids_are_stable_and_differ_by_seed() -> None:
    """Given two seeds, when the built-ins run, then ids follow the fingerprint, never shared."""
    ids: dict[int, set[str]] = {1: set(), 2: set()}
    for seed, found in ids.items():
        fingerprint = market_for(parse_params({"seed": seed})).fingerprint()
        for name in BUILTIN_NAMES:
            for o in (await run(name, {"seed": seed})).found_log:
                if name not in ("cross_venue_arbitrage", "funding_carry", "basis_carry"):
                    assert o.id == opportunity_id(name, fingerprint, o.symbol, o.side)  # no key
                found.add(o.id)
    assert ids[1] and ids[2] and not ids[1] & ids[2]


async def test_pace_slows_each_symbol() -> None:
    """Given pace_ms, when a strategy runs, then it pauses that long per symbol."""
    params = {"symbols": ["A-USD", "B-USD", "C-USD", "D-USD", "E-USD"], "pace_ms": 30}
    started = time.perf_counter()
    ctx = await run("momentum", params)
    assert time.perf_counter() - started >= 5 * 0.03
    assert [m for _, m in ctx.progress_log] == params["symbols"]


async def test_thresholds_can_be_overridden() -> None:
    """Given looser RSI levels in params, when rsi runs, then it finds more than by default."""
    default = await run("rsi")
    loose = await run("rsi", {"rsi": {"upper": 55, "lower": 45}})
    assert len(loose.found_log) > len(default.found_log)
    assert all(o.details["level"] in (55, 45) for o in loose.found_log)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"rsi": {"upper": "high"}}, "params.rsi.upper"),
        ({"rsi": {"upper": 101}}, "params.rsi.upper"),
        ({"rsi": {"nope": 1}}, "params.rsi.nope"),
        ({"momentum": {"lookback": 2.5}}, "params.momentum.lookback"),
        ({"pairs_spread": [1]}, "params.pairs_spread"),
        ({"bars": 1}, "params.bars"),
    ],
)
def test_bad_thresholds_name_the_field(params: dict[str, Any], field: str) -> None:
    """Given a bad threshold override, when params are checked up front, then the error names it."""
    with pytest.raises(InvalidRequest) as info:
        check_params(params)
    assert info.value.field == field


async def test_bad_threshold_fails_the_run_too() -> None:
    """Given an unchecked bad override, when the strategy runs, then it fails naming the field."""
    with pytest.raises(InvalidRequest, match=r"params\.rsi\.upper"):
        await run("rsi", {"rsi": {"upper": "high"}})


def test_check_params_only_checks_the_named_strategies() -> None:
    """Given a bad override of a strategy not in the scan, when checked, then it passes."""
    assert check_params({"rsi": {"nope": 1}, "seed": 3}, ["momentum"]).seed == 3


async def test_csv_market_gives_the_same_findings(tmp_path: Path) -> None:
    """Given the default market written as CSV, when built-ins run on both, then findings match."""
    synthetic = SyntheticMarket(MarketParams())
    write_csv(synthetic, tmp_path)
    csv = load_market(
        {"source": "csv", "csv_dir": ".", "symbols": synthetic.symbols},
        CsvSettings(root=str(tmp_path)),
    )
    assert csv.fingerprint() != synthetic.fingerprint()
    total = 0
    for name in BUILTIN_NAMES:
        a, b = await run(name, market=synthetic), await run(name, market=csv)
        assert findings_without_ids(a) == findings_without_ids(b), name
        total += len(a.found_log)
    assert total > 0


async def test_a_context_without_a_market_uses_the_params() -> None:
    """Given a context without a market, when a strategy runs, then it builds one from params."""
    ctx = RecordingContext("cross_venue_arbitrage", {"seed": 3})
    await builtin_strategies()["cross_venue_arbitrage"].run(ctx)
    expected = await run("cross_venue_arbitrage", {"seed": 3})
    assert ctx.found_log == expected.found_log


@pytest.mark.parametrize("name", BUILTIN_NAMES)
async def test_builtin_copes_with_a_tiny_market(name: str) -> None:
    """Given 2 symbols, 1 venue and 50 bars, when a built-in runs, then it completes cleanly."""
    ctx = await run(name, {"symbols": ["AAA-USD", "BBB-USD"], "venues": ["x"], "bars": 50})
    assert ctx.progress_log[-1][0] == 1.0
    assert all(o.strategy == name for o in ctx.found_log)


# --- the registry -------------------------------------------------------------------------


@pytest.fixture
def module_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """Writes a strategy module with the given source; returns its unique import path."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str) -> str:
        name = f"strategies_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


STRATEGY_SOURCE = textwrap.dedent("""
    from scanstream.strategies import strategy

    @strategy({name!r}, "A strategy made for a test.")
    async def {fn}(ctx):
        await ctx.progress(1.0, "done")
""")


def test_without_extras_the_builtins_are_loaded() -> None:
    """Given no extra modules, when strategies are loaded, then they are the built-ins."""
    assert load_strategies() == builtin_strategies()


async def test_docs_example_loads_beside_the_builtins(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the documented example module, when loaded and run, then its strategies work."""
    monkeypatch.syspath_prepend(str(repo_root / "docs" / "examples"))
    strategies = load_strategies(["my_strategies"])
    assert list(strategies) == [*BUILTIN_NAMES, "drawdown_rebound", "funding_spread"]
    found = 0
    for name in ("drawdown_rebound", "funding_spread"):
        first = await run(name, strategies=strategies)
        assert_valid(first, name)
        assert (await run(name, strategies=strategies)).found_log == first.found_log
        found += len(first.found_log)
    assert found > 0


def test_docs_show_the_tested_example(repo_root: Path) -> None:
    """Given docs/strategies.md, when read, then it quotes the tested example module verbatim."""
    example = (repo_root / "docs" / "examples" / "my_strategies.py").read_text()
    assert f"```python\n{example}```" in (repo_root / "docs" / "strategies.md").read_text()


def test_extra_module_strategies_come_after_the_builtins(
    module_factory: Callable[[str], str],
) -> None:
    """Given a module with one strategy, when loaded, then it follows the 14 built-ins."""
    path = module_factory(STRATEGY_SOURCE.format(name="extra_one", fn="extra_one"))
    assert list(load_strategies([path]))[-1] == "extra_one"


def test_strategies_list_is_read(module_factory: Callable[[str], str]) -> None:
    """Given a module listing strategies in STRATEGIES, when loaded, then they are found."""
    path = module_factory(
        """
        from scanstream.strategies import Strategy

        async def run(ctx):
            pass

        STRATEGIES = [Strategy("listed_a", "Listed, not decorated.", run)]
        """
    )
    assert "listed_a" in load_strategies([path])


def test_reexporting_a_builtin_is_not_a_clash(module_factory: Callable[[str], str]) -> None:
    """Given a module that imports a built-in strategy, when loaded, then there is no clash."""
    source = STRATEGY_SOURCE.format(name="extra_two", fn="extra_two")
    path = module_factory(source + "\nfrom scanstream.strategies.builtin.trend import momentum\n")
    assert len(load_strategies([path])) == 15


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("def broken(:\n", "SyntaxError"),
        ("x = 1\n", "defines no strategies"),
        (STRATEGY_SOURCE.format(name="momentum", fn="mine"), "'momentum' of module"),
        (STRATEGY_SOURCE.format(name="Bad-Name", fn="bad"), "must match"),
        (STRATEGY_SOURCE.format(name="x" * 65, fn="long"), "must match"),
        ("STRATEGIES = ['momentum']\n", "not a Strategy"),
        (
            "from scanstream.strategies import Strategy\n"
            "async def r(ctx): pass\n"
            "A = Strategy('dup_name', 'one', r)\n"
            "B = Strategy('dup_name', 'two', r)\n",
            "'dup_name' of module",
        ),
    ],
)
def test_bad_modules_are_load_errors(
    module_factory: Callable[[str], str], source: str, message: str
) -> None:
    """Given a broken strategy module, when loaded, then StrategyLoadError says what is wrong."""
    path = module_factory(source)
    with pytest.raises(StrategyLoadError) as info:
        load_strategies([path])
    assert message in str(info.value) and path in str(info.value)


def test_clash_between_extra_modules(module_factory: Callable[[str], str]) -> None:
    """Given two modules defining one name, when both are loaded, then the second is refused."""
    first = module_factory(STRATEGY_SOURCE.format(name="shared", fn="a"))
    second = module_factory(STRATEGY_SOURCE.format(name="shared", fn="b"))
    with pytest.raises(StrategyLoadError, match=f"'shared' of module '{second}' clashes with"):
        load_strategies([first, second])


@pytest.mark.parametrize("path", ["no_such_module_for_scanstream", "a b", "../etc", ""])
def test_unimportable_paths_are_load_errors(path: str) -> None:
    """Given a path that is not an importable module, when loaded, then the error names it."""
    with pytest.raises(StrategyLoadError, match=re.escape(repr(path))):
        load_strategies([path])
