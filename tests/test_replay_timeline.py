"""Replay: the timeline and time travel, live (Redis) and from an exported file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from scanstream import projection
from scanstream.embedded import RedisProcess
from scanstream.render import results_of, status_of
from scanstream.replay import load_log, select, state_at, steps, timeline
from scanstream.replay.changes import plain
from scanstream.replay.cli import main
from scanstream.replay.exchange import export_log
from scanstream.settings import Settings
from tests.support.replay_scans import shared_scan


@pytest.fixture(scope="module")
def mixed(redis_server: RedisProcess) -> tuple[Settings, str]:
    return shared_scan(redis_server.url)


@pytest.fixture
def env(mixed: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch) -> str:
    settings, scan_id = mixed
    monkeypatch.setenv("SCANSTREAM_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("SCANSTREAM_PREFIX", settings.prefix)
    monkeypatch.setenv("SCANSTREAM_STRATEGIES", "tests.support.strategies")
    return scan_id


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, object]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, orjson.loads(out) if out.strip() else None


def test_the_timeline_lists_every_entry_in_order_with_a_summary(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan, when its timeline is printed as JSON, then every entry is there in
    stream order, with its type, strategy and attempt, and offsets that never go back."""
    code, body = run_json([env, "--json"], capsys)
    assert code == 0 and isinstance(body, dict)
    rows = body["rows"]
    log = load_log(env, settings=Settings.from_env())
    assert [r["entry_id"] for r in rows] == [e.id for e in log.entries]
    assert [r["n"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["type"] == "scan.requested" and rows[-1]["type"] == "scan.completed"
    assert [r["offset_ms"] for r in rows] == sorted(r["offset_ms"] for r in rows)
    flaky = [r for r in rows if r["strategy"] == "flaky" and r["type"] == "strategy.started"]
    assert [r["attempt"] for r in flaky] == [1, 2]
    failed = next(r for r in rows if r["type"] == "strategy.failed" and r["strategy"] == "poison")
    assert "RuntimeError: poisoned input" in failed["summary"]


def test_filters_keep_only_the_chosen_strategies_and_types(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan, when filtered by strategy and by a type glob, then only matching
    rows remain."""
    code, body = run_json([env, "--strategy", "poison", "--type", "strategy.*", "--json"], capsys)
    assert code == 0 and isinstance(body, dict)
    assert body["rows"] and all(
        r["strategy"] == "poison" and r["type"].startswith("strategy.") for r in body["rows"]
    )
    assert [r["type"] for r in body["rows"]].count("strategy.failed") == 3


def test_the_human_timeline_renders_a_table(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Given a real scan, when printed for a person, then a table names each event type."""
    assert main([env, "--type", "scan.*"]) == 0
    out = capsys.readouterr().out
    assert env in out and "scan.requested" in out and "scan.completed" in out
    assert "2 of" in out  # the filter says how much it hid


def test_a_file_gives_the_same_timeline_and_projections_as_the_live_scan(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan and its export, when both are replayed, then the timelines, the
    projections at every entry and the steps are identical."""
    export = tmp_path / "scan.jsonl"
    assert main([env, "--export", str(export)]) == 0
    capsys.readouterr()
    _, live = run_json([env, "--json"], capsys)
    _, filed = run_json(["--file", str(export), "--json"], capsys)
    assert isinstance(live, dict) and isinstance(filed, dict)
    assert live["rows"] == filed["rows"]
    for n in (1, len(live["rows"]) // 2, -1):
        assert run_json([env, "--at", str(n), "--json"], capsys) == run_json(
            ["--file", str(export), "--at", str(n), "--json"], capsys
        )
    assert run_json([env, "--step", "--json"], capsys) == run_json(
        ["--file", str(export), "--step", "--json"], capsys
    )


def test_at_n_and_at_entry_id_equal_folding_that_prefix_for_every_prefix(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan of N entries, when --at n (and --at its entry id) is asked for every
    n, then each answer is the API's fold and rendering of exactly the first n entries."""
    log = load_log(env, settings=Settings.from_env())
    for n in range(1, len(log.entries) + 1):
        view = projection.fold_all(env, log.entries[:n])
        expected = {
            "scan_id": env,
            "at": {"count": n, "entry_id": log.entries[n - 1].id},
            "status": plain(status_of(view)),
            "results": plain(results_of(view)),
        }
        assert run_json([env, "--at", str(n), "--json"], capsys) == (0, expected), n
        assert run_json([env, "--at", log.entries[n - 1].id, "--json"], capsys) == (0, expected)


def test_until_selects_the_entries_appended_by_then(mixed: tuple[Settings, str]) -> None:
    """Given a real scan, when --until is the time of entry k (or just before entry 1), then
    the fold covers the entries up to the last one appended in that millisecond (or none)."""
    settings, scan_id = mixed
    log = load_log(scan_id, settings=settings)
    rows = timeline(log.entries)
    k = len(rows) // 2
    snap = state_at(scan_id, log.entries, until=rows[k].time)
    same_ms = [r for r in rows if r.time <= rows[k].time]
    assert snap.count == len(same_ms) and snap.entry_id == same_ms[-1].entry_id
    first_ms = int(rows[0].entry_id.split("-")[0])
    assert state_at(scan_id, log.entries, until=first_ms - 1).count == 0
    assert state_at(scan_id, log.entries, until=str(first_ms)).count >= 1


def test_step_shows_what_each_event_changed(mixed: tuple[Settings, str]) -> None:
    """Given a real scan, when walked step by step, then a strategy.started step changes
    that strategy's state to running, and an opportunity.found step adds that opportunity."""
    settings, scan_id = mixed
    log = load_log(scan_id, settings=settings)
    walked = list(steps(scan_id, log.entries))
    assert len(walked) == len(log.entries)
    started = next(s for s in walked if s.entry.type == "strategy.started")
    name = started.entry.event.strategy  # type: ignore[union-attr]
    assert any(
        c.path == f"strategies[{name}].state" and (c.before, c.after) == ("pending", "running")
        for c in started.changes
    )
    found = next(s for s in walked if s.entry.type == "opportunity.found")
    oid = found.entry.event.opportunity.id  # type: ignore[union-attr]
    assert any(c.path == f"opportunities[{oid}]" for c in found.changes)
    assert all(not c.path.startswith("last_event_id") for s in walked for c in s.changes)


def test_step_honours_at_and_filters(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Given a real scan, when --step is limited by --at 10 and a type, then only those steps
    within the first 10 entries are shown, and the human form names each step."""
    code, body = run_json(
        [env, "--step", "--at", "10", "--type", "strategy.started", "--json"], capsys
    )
    assert code == 0 and isinstance(body, dict)
    assert body["steps"] and all(
        s["n"] <= 10 and s["type"] == "strategy.started" for s in body["steps"]
    )
    assert main([env, "--step", "--at", "3"]) == 0
    out = capsys.readouterr().out
    assert "#1" in out and "#3" in out and "#4" not in out


def test_the_human_snapshot_shows_strategies_and_opportunities(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a real scan, when --at -1 is printed for a person, then it shows the final
    state, each strategy and the ranked opportunities."""
    assert main([env, "--at", "-1"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "poison" in out and "poisoned input" in out and "opp_" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--at", "999"], "the log has"),
        (["--at", "1-1"], "no entry 1-1"),
        (["--until", "yesterday"], "not a time"),
    ],
)
def test_bad_positions_are_errors_not_crashes(
    env: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Given a real scan, when --at / --until point nowhere, then exit 2 with a sentence."""
    assert main([env, *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_scans_and_missing_redis_are_clear_errors(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given no such scan, or no Redis configured, when replayed, then exit 2 saying why."""
    assert main(["scan_" + "0" * 32]) == 2
    assert "unknown or expired" in capsys.readouterr().err
    assert main(["not-a-scan"]) == 2
    assert "neither a scan id nor an exported file" in capsys.readouterr().err
    monkeypatch.delenv("SCANSTREAM_REDIS_URL")
    assert main([env]) == 2
    assert "--file" in capsys.readouterr().err


def test_select_drops_scan_level_rows_when_filtering_by_strategy(
    mixed: tuple[Settings, str],
) -> None:
    """Given a timeline, when filtered by strategy, then scan-level rows are not kept."""
    settings, scan_id = mixed
    rows = timeline(load_log(scan_id, settings=settings).entries)
    assert all(r.strategy == "finder" for r in select(rows, strategies=["finder"]))
    assert select(rows) == rows


def test_export_to_stdout_reads_back(
    env: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Given a real scan, when exported to '-', then stdout holds the same export a file gets."""
    assert main([env, "--export", "-"]) == 0
    out = capsysbinary.readouterr().out
    path = tmp_path / "x.jsonl"
    export_log(load_log(env, settings=Settings.from_env()), path)
    assert out.splitlines()[1:] == path.read_bytes().splitlines()[1:]  # header: exported_at
