"""Replay: diff of two scans, and re-running a strategy on a scan's recorded inputs."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest

from scanstream.embedded import RedisProcess
from scanstream.replay import diff, load_log, rerun
from scanstream.replay.cli import main
from scanstream.replay.exchange import export_log
from scanstream.settings import Settings
from scanstream.strategies.api import Strategy, StrategyContext, strategy
from tests.support import replay_scans
from tests.support import strategies as ts
from tests.support.replay_scans import SMALL_MARKET, run_scan, shared_scan
from tests.support.scans import market_factory


@pytest.fixture(scope="module")
def mixed(redis_server: RedisProcess) -> tuple[Settings, str]:
    return shared_scan(redis_server.url)


@pytest.fixture(scope="module")
def pair(redis_server: RedisProcess) -> tuple[Settings, str, str]:
    """Two real scans: finder finds 3 then 4 (scores shift), poison is swapped for flaky."""
    settings = replay_scans.scan_settings(redis_server.url, "replaydiff")
    a = anyio.run(
        lambda: run_scan(
            settings, ["finder", "noop", "poison", "momentum"], {**SMALL_MARKET, "finds": 3}
        )
    )
    b = anyio.run(
        lambda: run_scan(
            settings, ["finder", "noop", "flaky", "momentum"], {**SMALL_MARKET, "finds": 4}
        )
    )
    return settings, a, b


def test_diff_reports_states_attempts_and_opportunities_per_strategy(
    pair: tuple[Settings, str, str],
) -> None:
    """Given two real scans whose params and strategies differ, when diffed, then finder's
    three shared ids are changed (score) and one is added, poison and flaky each exist on one
    side, noop and momentum are the same, and params show the change."""
    settings, a, b = pair
    result = diff(load_log(a, settings=settings), load_log(b, settings=settings))

    assert not result.empty
    per = {s.name: s for s in result.strategies}
    assert list(per) == ["finder", "noop", "poison", "momentum", "flaky"]
    finder = per["finder"].opportunities
    assert (finder.same, len(finder.added), len(finder.removed), len(finder.changed)) == (
        0,
        1,
        0,
        3,
    )
    assert all({c.path for c in cs} == {"score"} for _, cs in finder.changed)
    assert per["noop"].empty and per["momentum"].empty
    assert per["poison"].b is None and per["poison"].a is not None
    assert per["poison"].a.state == "failed" and per["poison"].a.attempts == 3
    assert per["flaky"].a is None and per["flaky"].b is not None and per["flaky"].b.attempts == 2
    assert per["finder"].a is not None and per["finder"].a.duration_ms is not None
    assert {c.path for c in result.scan} >= {"params.finds", "strategies[2]"}


def test_a_scan_diffed_with_its_own_export_is_the_same(
    pair: tuple[Settings, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given a scan and its export, when `replay diff` compares them (and two different
    scans), then it exits 0 for the same scan and 1 with the details for the others."""
    settings, a, b = pair
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
    export_log(load_log(a, settings=settings), tmp_path / "a.jsonl")

    assert main(["diff", a, str(tmp_path / "a.jsonl"), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["same"] is True
    assert main(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "different" in out and "finder" in out and "params.finds" in out and "~ opp_" in out
    assert main(["diff", a, "nope"]) == 2


@pytest.mark.parametrize(
    "name",
    [
        "momentum",
        "mean_reversion",
        "breakout",
        "cross_venue_arbitrage",
        "finder",
        "flaky",
        "poison",
        "noop",
    ],
)
def test_rerun_matches_the_recorded_findings(mixed: tuple[Settings, str], name: str) -> None:
    """Given a real scan, when each strategy is re-run locally on the recorded params, then
    it finds exactly what its last completed attempt recorded (flaky: attempt 2; poison
    fails again, as recorded)."""
    settings, scan_id = mixed
    log = load_log(scan_id, settings=settings)

    report = anyio.run(lambda: rerun(log, name, settings=settings))

    assert report.same, report.to_json()
    assert report.opportunities.same == len(report.recorded.opportunities) == len(report.found)
    if name == "flaky":
        assert report.recorded.attempt == 2 and len(report.found) == 1
    if name == "poison":
        assert report.recorded.state == "failed" and report.error is not None
        assert report.error.message == "poisoned input"


def test_rerun_shows_when_the_code_changed(mixed: tuple[Settings, str]) -> None:
    """Given a real scan, when finder is re-run with changed code (one finding fewer, one
    scored differently, one new), then the report shows removed, changed and added."""
    settings, scan_id = mixed
    log = load_log(scan_id, settings=settings)

    @strategy("finder", "finder, edited")
    async def edited(ctx: StrategyContext) -> None:
        await ctx.found(
            ctx.opportunity(
                symbol="SYM0", side="long", score=0.9, expected_return=0.001, details={"i": 0}
            )
        )
        await ctx.found(
            ctx.opportunity(
                symbol="SYM1", side="long", score=0.5, expected_return=0.002, details={"i": 1}
            )
        )
        await ctx.found(ctx.opportunity(symbol="NEW", side="short", score=0.1, expected_return=0.0))

    table: dict[str, Strategy] = {"finder": edited}
    report = anyio.run(
        lambda: rerun(
            log,
            "finder",
            strategies=table,
            settings=settings,
            market_factory=market_factory,
        )
    )

    assert not report.same
    o = report.opportunities
    assert (o.same, [x.symbol for x in o.added], [x.symbol for x in o.removed]) == (
        1,
        ["NEW"],
        ["SYM2"],
    )
    assert [[c.path for c in cs] for _, cs in o.changed] == [["score"]]


def test_rerun_on_other_market_data_finds_other_ids(mixed: tuple[Settings, str]) -> None:
    """Given a real scan, when re-run on a market with another fingerprint (other data),
    then every recorded finding is removed and every local one added: ids carry the data."""
    settings, scan_id = mixed
    log = load_log(scan_id, settings=settings)

    class OtherData:
        def fingerprint(self) -> str:
            return "other-data"

    report = anyio.run(
        lambda: rerun(
            log,
            "finder",
            strategies={"finder": ts.finder},
            settings=settings,
            market_factory=lambda p: OtherData(),
        )
    )

    assert (len(report.opportunities.removed), len(report.opportunities.added)) == (3, 3)


def test_the_cli_reruns_a_strategy(
    mixed: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan, when `--rerun breakout` runs with the project's strategy loading,
    then it exits 0 and says the findings are the same; an unknown strategy is an error."""
    settings, scan_id = mixed
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
    monkeypatch.setenv("SCANSTREAM_STRATEGIES", "tests.support.strategies")

    assert main([scan_id, "--rerun", "breakout"]) == 0
    assert "same findings" in capsys.readouterr().out
    assert main([scan_id, "--rerun", "flaky", "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["same"] and body["recorded"]["attempt"] == 2
    assert main([scan_id, "--rerun", "nonesuch"]) == 2
    assert "unknown strategy" in capsys.readouterr().err
