"""Replay: the golden logs (one set per schema version) keep folding to what they recorded,
and entries of an older schema version are upcast on read and fold the same."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from scanstream import events as ev
from scanstream.replay import read_export, state_at, verify
from scanstream.replay.cli import main

GOLDEN = Path(__file__).parent / "golden"
LOGS = sorted(GOLDEN.glob("v*.jsonl"))


def recorded(path: Path, part: str) -> Any:
    return orjson.loads(path.with_suffix(f".{part}.json").read_bytes())


def test_there_is_a_golden_log_for_every_schema_version() -> None:
    """Given the schema version of this code, then a golden log of it and of every earlier
    version is checked in (a new version must add its own, never rewrite old ones)."""
    versions = {int(p.name[1:].split("-")[0]) for p in LOGS}
    assert versions == set(range(1, ev.SCHEMA_VERSION + 1))


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_a_golden_log_folds_to_its_recorded_projections(path: Path) -> None:
    """Given a golden log, when folded by today's code, then status and results equal the
    ones recorded when it was exported, and its invariants hold."""
    log = read_export(path)
    snap = state_at(log.scan_id, log.entries)
    assert snap.status == recorded(path, "status")
    assert snap.results == recorded(path, "results")
    assert all(e.event is not None for e in log.entries)
    assert verify(log).ok


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_the_cli_replays_a_golden_log_without_redis(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a golden log and no Redis configured at all, when `--file FILE --at -1 --json`
    runs, then it prints the recorded projections."""
    monkeypatch.delenv("SCANSTREAM_REDIS_URL", raising=False)
    assert main(["--file", str(path), "--at", "-1", "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert (body["status"], body["results"]) == (
        recorded(path, "status"),
        recorded(path, "results"),
    )


def test_old_versions_are_upcast_and_fold_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a future schema version 2 whose upcasters turn every v1 event into v2, when the
    v1 golden logs are read, then every entry goes through its upcaster and the projections
    are exactly the recorded ones."""
    calls: Counter[str] = Counter()

    def upcaster(type_: str) -> ev.Upcaster:
        def up(raw: dict[str, Any]) -> dict[str, Any]:
            calls[type_] += 1
            return raw

        return up

    monkeypatch.setattr(ev, "SCHEMA_VERSION", 2)
    for type_ in ev.CLASS_OF:
        monkeypatch.setitem(ev.UPCASTERS, (type_, 1), upcaster(type_))

    for path in GOLDEN.glob("v1-*.jsonl"):
        log = read_export(path)
        assert all(e.event is not None and e.event.v == 2 for e in log.entries)
        snap = state_at(log.scan_id, log.entries)
        assert (snap.status, snap.results) == (recorded(path, "status"), recorded(path, "results"))
    assert set(calls) >= {
        "scan.requested",
        "strategy.started",
        "opportunity.found",
        "strategy.completed",
        "strategy.failed",
        "scan.completed",
        "scan.cancel_requested",
        "scan.cancelled",
    }


def test_an_old_shape_is_upcast_into_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a v1 opportunity.found in an older shape (`return` instead of `expected_return`)
    under a schema version 2 with an upcaster that renames it, when the log is folded, then
    it gives the same results as the same finding written in today's shape."""
    monkeypatch.setattr(ev, "SCHEMA_VERSION", 2)

    def rename(raw: dict[str, Any]) -> dict[str, Any]:
        opp = dict(raw["opportunity"])
        opp["expected_return"] = opp.pop("return")
        return {**raw, "opportunity": opp}

    monkeypatch.setitem(ev.UPCASTERS, ("opportunity.found", 1), rename)
    requested = ev.stamp(ev.ScanRequested, user_id="u", strategies=["s"])
    opp = ev.Opportunity(
        id="opp_1", strategy="s", symbol="X", side="long", score=0.4, expected_return=0.02
    )
    current = ev.stamp(ev.OpportunityFound, strategy="s", attempt=1, opportunity=opp)
    old = msgspec.to_builtins(current)
    old["v"] = 1
    old["opportunity"]["return"] = old["opportunity"].pop("expected_return")
    started = ev.stamp(ev.StrategyStarted, strategy="s", attempt=1, worker="w")
    base = [
        ev.decode("1-0", "scan.requested", ev.encode(requested)),
        ev.decode("2-0", "strategy.started", ev.encode(started)),
    ]

    then = [*base, ev.decode("3-0", "opportunity.found", ev.encode_obj(old))]
    v2 = msgspec.structs.replace(current, v=2)  # the same finding written by version 2
    now = [*base, ev.decode("3-0", "opportunity.found", ev.encode(v2))]

    assert then[-1].problem is None and now[-1].problem is None
    assert state_at("scan_x", then).results == state_at("scan_x", now).results
    assert state_at("scan_x", then).results["opportunities"][0]["expected_return"] == 0.02
