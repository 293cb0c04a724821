"""Replay: --verify checks the log's invariants and what the API serves against the fold."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scanstream import events as ev
from scanstream.api.auth import make_token
from scanstream.embedded import RedisProcess
from scanstream.replay import Log, RawEntry, load_log, state_at, verify
from scanstream.replay.cli import main
from scanstream.replay.exchange import export_log
from scanstream.settings import Settings
from tests.support.http import serve
from tests.support.replay_scans import TEST_SECRET, shared_scan

GOLDEN = Path(__file__).parent / "golden" / "v1-completed.jsonl"


@pytest.fixture(scope="module")
def mixed(redis_server: RedisProcess) -> tuple[Settings, str]:
    return shared_scan(redis_server.url)


@pytest.fixture
def env(mixed: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch) -> str:
    settings, scan_id = mixed
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
    monkeypatch.delenv("SCANSTREAM_API_URL", raising=False)
    monkeypatch.delenv("SCANSTREAM_TOKEN", raising=False)
    return scan_id


def golden() -> Log:
    from scanstream.replay import read_export

    return read_export(GOLDEN)


def with_raw(log: Log, raw: list[RawEntry]) -> Log:
    return Log(scan_id=log.scan_id, raw=raw, origin="edited", prefix=log.prefix)


def raw_event(entry_id: str, event: ev.Event) -> RawEntry:
    return RawEntry(entry_id, ((b"type", ev.type_of(event).encode()), (b"data", ev.encode(event))))


def kinds(log: Log) -> set[str]:
    return {f.kind for f in verify(log).findings if f.severity == "error"}


def test_a_real_scan_and_the_golden_logs_verify_clean(mixed: tuple[Settings, str]) -> None:
    """Given a real scan (retries, a final failure) and the golden logs, when verified, then
    every invariant holds and nothing is reported."""
    settings, scan_id = mixed
    for log in (load_log(scan_id, settings=settings), golden()):
        report = verify(log)
        assert report.ok and report.findings == [], report.findings


def test_a_corrupted_entry_is_reported_with_its_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given an export where one entry's data was damaged, when verified (API and CLI), then
    the entry is named as unreadable and the CLI exits 1."""
    log = golden()
    raw = list(log.raw)
    victim = raw[11]
    raw[11] = RawEntry(
        victim.id,
        ((b"type", victim.get(b"type") or b""), (b"data", (victim.get(b"data") or b"")[:-7])),
    )
    broken = with_raw(log, raw)

    report = verify(broken)

    assert not report.ok
    assert [(f.kind, f.entry_id) for f in report.findings if f.severity == "error"][:1] == [
        ("unreadable", victim.id)
    ]
    export_log(broken, tmp_path / "broken.jsonl")
    assert main(["--file", str(tmp_path / "broken.jsonl"), "--verify", "--json"]) == 1
    body = orjson.loads(capsys.readouterr().out)
    assert body["ok"] is False and victim.id in {f["entry_id"] for f in body["findings"]}
    assert main(["--file", str(tmp_path / "broken.jsonl"), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "unreadable" in out and victim.id in out


def test_each_broken_invariant_is_caught() -> None:
    """Given the golden log edited to break one invariant at a time, when verified, then that
    invariant (and only an error of that kind) is reported."""
    log = golden()
    raw = list(log.raw)
    requested = log.entries[0].event
    assert isinstance(requested, ev.ScanRequested)
    finder_opp = next(
        e.event.opportunity
        for e in log.entries
        if isinstance(e.event, ev.OpportunityFound) and e.event.strategy == "finder"
    )
    late = "9999999999999-"
    cases: dict[str, list[RawEntry]] = {
        "requested_twice": [
            *raw,
            raw_event(late + "0", ev.stamp(ev.ScanRequested, user_id="x", strategies=["finder"])),
        ],
        "after_terminal": [
            *raw,
            raw_event(
                late + "0", ev.stamp(ev.StrategyProgress, strategy="slow", attempt=1, progress=0.5)
            ),
        ],
        "requested_not_first": raw[1:2] + raw[0:1] + raw[2:],
    }
    terminal_at = len(raw) - 1
    before_end = raw[:terminal_at]

    def insert(*events: ev.Event) -> list[RawEntry]:
        ms = int(raw[terminal_at - 1].id.split("-")[0])
        extra = [raw_event(f"{ms}-{900 + i}", e) for i, e in enumerate(events)]
        return [*before_end, *extra, raw[terminal_at]]

    cases["attempt_order"] = insert(
        ev.stamp(ev.StrategyStarted, strategy="poison", attempt=5, worker="w")
    )
    cases["stale_attempt"] = insert(
        ev.stamp(ev.StrategyProgress, strategy="poison", attempt=1, progress=0.5)
    )
    cases["opportunity_twice"] = insert(
        ev.stamp(ev.StrategyStarted, strategy="noop", attempt=2, worker="w"),
        ev.stamp(ev.OpportunityFound, strategy="noop", attempt=2, opportunity=finder_opp),
    )
    cases["after_strategy_end"] = insert(
        ev.stamp(ev.StrategyProgress, strategy="finder", attempt=1, progress=0.9)
    )
    for kind, edited in cases.items():
        found = kinds(with_raw(log, edited))
        assert kind in found, (kind, found)
    assert "after_strategy_end" in kinds(
        with_raw(
            log, insert(ev.stamp(ev.StrategyStarted, strategy="finder", attempt=2, worker="w"))
        )
    )
    terminal = log.entries[-1].event
    assert isinstance(terminal, ev.ScanCompleted)
    lying = ev.ScanCompleted(
        event_id=terminal.event_id,
        ts=terminal.ts,
        opportunities=99,
        strategies_completed=terminal.strategies_completed,
        strategies_failed=terminal.strategies_failed,
        duration_ms=terminal.duration_ms,
    )
    assert kinds(with_raw(log, [*before_end, raw_event(raw[-1].id, lying)])) == {"terminal_counts"}
    assert kinds(with_raw(log, before_end)) == {"no_terminal"}


def test_a_redelivered_write_is_a_warning_not_a_failure() -> None:
    """Given the golden log with one entry written twice (same event_id), when verified,
    then a warning names it and the report is still ok."""
    log = golden()
    raw = list(log.raw)
    again = RawEntry(f"{raw[-2].id.split('-')[0]}-999", raw[5].fields)
    report = verify(with_raw(log, [*raw[:-1], again, raw[-1]]))
    assert report.ok
    assert [f.kind for f in report.findings] == ["duplicate_event_id"]


def test_a_wrong_projection_is_reported_field_by_field() -> None:
    """Given the golden log's true projections with one field of each altered, when verified
    against them, then exactly those fields are reported, served value first."""
    log = golden()
    snap = state_at(log.scan_id, log.entries)
    status, results = copy.deepcopy(snap.status), copy.deepcopy(snap.results)
    status["strategies"][6]["state"] = "completed"
    results["opportunities"][0]["score"] = 0.5

    report = verify(log, status=status, results=results)

    assert not report.ok
    got = {c.name: [(ch.path, ch.before, ch.after) for ch in c.changes] for c in report.comparisons}
    oid = results["opportunities"][0]["id"]
    assert got == {
        "status": [("strategies[poison].state", "completed", "failed")],
        "results": [(f"opportunities[{oid}].score", 0.5, 1.0)],
    }
    assert verify(log, status=snap.status, results=snap.results).ok


def test_a_projection_served_at_an_earlier_entry_is_compared_at_that_entry() -> None:
    """Given projections the API served mid-scan (its last_event_id is entry 20), when
    verified against the whole log, then the refold stops at entry 20 and they agree."""
    log = golden()
    snap = state_at(log.scan_id, log.entries, at=20)
    report = verify(log, status=snap.status, results=snap.results)
    assert report.ok and {c.at for c in report.comparisons} == {log.entries[19].id}


def _fake_api(status: dict[str, Any], results: dict[str, Any], token: str) -> Starlette:
    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {token}"

    async def get_status(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "unauthorized", "detail": "no"}, 401)
        return JSONResponse(status)

    async def get_results(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "unauthorized", "detail": "no"}, 401)
        return JSONResponse(results)

    return Starlette(
        routes=[
            Route("/v1/scans/{scan_id}", get_status),
            Route("/v1/scans/{scan_id}/results", get_results),
        ]
    )


def test_the_cli_catches_an_api_serving_a_wrong_status(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a real scan and an HTTP API that serves its status with one strategy's attempts
    wrong, when `--verify --api URL --token T` runs, then it exits 1 naming that field; a
    wrong token is an error, not a pass."""
    log = load_log(env, settings=Settings.from_env())
    snap = state_at(env, log.entries)
    status = copy.deepcopy(snap.status)
    status["strategies"][5]["attempts"] = 1  # flaky took 2
    app = _fake_api(status, snap.results, "tok")
    with serve(app) as url:
        assert main([env, "--verify", "--api", url, "--token", "tok", "--json"]) == 1
        body = orjson.loads(capsys.readouterr().out)
        changes = {c["name"]: c["changes"] for c in body["comparisons"]}
        assert changes == {
            "status": [{"field": "strategies[flaky].attempts", "before": 1, "after": 2}],
            "results": [],
        }
        monkeypatch.setenv("SCANSTREAM_API_URL", url)
        monkeypatch.setenv("SCANSTREAM_TOKEN", "tok")
        assert main([env, "--verify"]) == 1
        out = capsys.readouterr().out
        assert "strategies[flaky].attempts" in out and "differs" in out
        assert main([env, "--verify", "--token", "wrong"]) == 2
        assert "HTTP 401" in capsys.readouterr().err


def test_the_cli_agrees_with_the_real_api(
    mixed: tuple[Settings, str],
    redis_server: RedisProcess,
    env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given real scans (finished; still running) and the real API app serving them, when
    `--verify` compares them, then status and results agree exactly and the exit is 0."""
    from scanstream.api.app import create_app

    settings, scan_id = mixed
    token = make_token(TEST_SECRET, "alice")
    with serve(create_app(settings)) as url:
        code = main([scan_id, "--verify", "--api", url, "--token", token, "--json"])
        body = orjson.loads(capsys.readouterr().out)
        assert code == 0, body
        assert [c["changes"] for c in body["comparisons"]] == [[], []]
        assert (
            main([scan_id, "--verify", "--api", url, "--token", make_token(TEST_SECRET, "mallory")])
            == 2
        )
        assert "does not know" in capsys.readouterr().err
    running_settings, running = shared_scan(redis_server.url, "unfinished")
    monkeypatch.setenv("SCANSTREAM_PREFIX", running_settings.prefix)
    with serve(create_app(running_settings)) as url:
        assert main([running, "--verify", "--api", url, "--token", token]) == 0
        assert "exactly the fold" in capsys.readouterr().out


def test_verify_without_an_api_checks_the_log_only(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given no API configured, when --verify runs, then the invariants are checked and the
    output says the API comparison was skipped."""
    assert main([env, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "skipped" in out
