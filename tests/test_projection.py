"""The projection fold: idempotent under re-delivery, splittable, robust to stale attempts."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from scanstream import events as ev
from scanstream.events import LogEntry
from scanstream.projection import ScanView, fold, fold_all
from scanstream.render import results_of, status_of

SCAN = "scan_" + "0" * 32


class Log:
    """Builds a log of entries with increasing entry ids, as Redis would assign them."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.ms = 1_700_000_000_000

    def add(self, event: ev.Event) -> LogEntry:
        self.ms += 1
        data = ev.encode(event)
        entry = ev.decode(f"{self.ms}-0", ev.type_of(event), data)
        assert entry.problem is None, entry.problem
        self.entries.append(entry)
        return entry

    def redeliver(self, entry: LogEntry) -> LogEntry:
        """The same write again (same event_id), appended later with a new entry id."""
        self.ms += 1
        again = ev.decode(f"{self.ms}-0", entry.type, entry.data)
        self.entries.append(again)
        return again


def _opportunity(strategy: str, n: int, score: float) -> ev.Opportunity:
    return ev.Opportunity(
        id=f"opp_{strategy}_{n}",
        strategy=strategy,
        symbol=f"S{n}",
        side="long",
        score=score,
        expected_return=0.01,
    )


@dataclass
class AttemptPlan:
    progress_steps: int
    finds: list[int]
    outcome: str  # "completed" | "failed" | "crashed"


strategy_names = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta"]), min_size=1, max_size=4, unique=True
)
attempt_plans = st.lists(
    st.builds(
        AttemptPlan,
        st.integers(0, 3),
        st.lists(st.integers(0, 5), max_size=4),
        st.sampled_from(["completed", "failed", "crashed"]),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def scan_logs(draw: Any) -> Log:
    """A plausible log: scan.requested, interleaved strategy attempts, maybe a terminal event."""
    names = draw(strategy_names)
    log = Log()
    log.add(ev.stamp(ev.ScanRequested, user_id="u1", strategies=names, params={}))
    plans = {name: draw(attempt_plans) for name in names}
    scripts: dict[str, list[ev.Event]] = {}
    for name, attempts in plans.items():
        script: list[ev.Event] = []
        for number, plan in enumerate(attempts, start=1):
            script.append(ev.stamp(ev.StrategyStarted, strategy=name, attempt=number, worker="w"))
            for step in range(plan.progress_steps):
                script.append(
                    ev.stamp(
                        ev.StrategyProgress,
                        strategy=name,
                        attempt=number,
                        progress=(step + 1) / (plan.progress_steps + 1),
                    )
                )
            for n in plan.finds:
                script.append(
                    ev.stamp(
                        ev.OpportunityFound,
                        strategy=name,
                        attempt=number,
                        opportunity=_opportunity(name, n, (n + 1) / 7),
                    )
                )
            last = number == len(attempts)
            if plan.outcome == "completed":
                script.append(
                    ev.stamp(
                        ev.StrategyCompleted,
                        strategy=name,
                        attempt=number,
                        opportunities=len(set(plan.finds)),
                        duration_ms=5,
                    )
                )
                break
            if plan.outcome == "failed":
                script.append(
                    ev.stamp(
                        ev.StrategyFailed,
                        strategy=name,
                        attempt=number,
                        error=ev.ErrorInfo(type="E", message="x"),
                        final=last,
                    )
                )
                if last:
                    break
        scripts[name] = script
    order = draw(st.permutations([name for name, s in scripts.items() for _ in s]))
    cursors = dict.fromkeys(scripts, 0)
    for name in order:
        log.add(scripts[name][cursors[name]])
        cursors[name] += 1
    if draw(st.booleans()):
        log.add(
            ev.stamp(
                ev.ScanCancelled,
                opportunities=0,
                strategies_completed=0,
                strategies_failed=0,
                duration_ms=1,
            )
        )
    return log


def _public(view: ScanView) -> tuple[Any, Any]:
    """What a user sees, minus the position in the log (which duplicates do move)."""
    status = msgspec.to_builtins(status_of(view))
    results = msgspec.to_builtins(results_of(view))
    del status["last_event_id"], results["last_event_id"], status["updated_at"]
    return status, results


@settings(max_examples=200, deadline=None)
@given(scan_logs(), st.data())
def test_any_duplication_of_events_gives_the_same_projection(log: Log, data: Any) -> None:
    """Re-delivering any entries, any number of times, changes nothing a user sees."""
    original = fold_all(SCAN, log.entries)
    picks = data.draw(st.lists(st.sampled_from(log.entries), max_size=10))
    for entry in picks:
        log.redeliver(entry)
    assert _public(fold_all(SCAN, log.entries)) == _public(original)


@settings(max_examples=200, deadline=None)
@given(scan_logs(), st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_the_whole(log: Log, data: Any) -> None:
    """Incremental catch-up (as the per-worker cache does it) equals a full rebuild."""
    cut = data.draw(st.integers(0, len(log.entries)))
    head = fold_all(SCAN, log.entries[:cut])
    assert fold(head, log.entries[cut:]) == fold_all(SCAN, log.entries)


@settings(max_examples=100, deadline=None)
@given(scan_logs())
def test_fold_never_mutates_its_input(log: Log) -> None:
    """fold returns a new view: a cached projection shared by requests is never changed."""
    half = fold_all(SCAN, log.entries[: len(log.entries) // 2])
    snapshot = _public(half), half.last_event_id, set(half.seen_event_ids)
    fold(half, log.entries[len(log.entries) // 2 :])
    assert (_public(half), half.last_event_id, set(half.seen_event_ids)) == snapshot


def test_late_event_from_a_superseded_attempt_does_not_regress_a_strategy() -> None:
    """Given attempt 2 running, when attempt 1's progress and completion arrive, nothing changes."""
    log = Log()
    log.add(ev.stamp(ev.ScanRequested, user_id="u1", strategies=["alpha"], params={}))
    log.add(ev.stamp(ev.StrategyStarted, strategy="alpha", attempt=2, worker="w2"))
    log.add(ev.stamp(ev.StrategyProgress, strategy="alpha", attempt=2, progress=0.5))
    before = fold_all(SCAN, log.entries)
    log.add(ev.stamp(ev.StrategyProgress, strategy="alpha", attempt=1, progress=0.9))
    log.add(
        ev.stamp(ev.StrategyCompleted, strategy="alpha", attempt=1, opportunities=0, duration_ms=1)
    )
    after = fold_all(SCAN, log.entries)
    assert after.strategies["alpha"] == before.strategies["alpha"]
    assert (
        after.strategies["alpha"].state == "running" and after.strategies["alpha"].progress == 0.5
    )


def test_the_same_opportunity_from_a_retry_counts_once() -> None:
    """Given attempt 1 found X and crashed, when attempt 2 finds X again, then X is listed once."""
    log = Log()
    log.add(ev.stamp(ev.ScanRequested, user_id="u1", strategies=["alpha"], params={}))
    opp = _opportunity("alpha", 1, 0.8)
    log.add(ev.stamp(ev.StrategyStarted, strategy="alpha", attempt=1, worker="w1"))
    log.add(ev.stamp(ev.OpportunityFound, strategy="alpha", attempt=1, opportunity=opp))
    log.add(ev.stamp(ev.StrategyStarted, strategy="alpha", attempt=2, worker="w2"))
    log.add(ev.stamp(ev.OpportunityFound, strategy="alpha", attempt=2, opportunity=opp))
    log.add(
        ev.stamp(ev.StrategyCompleted, strategy="alpha", attempt=2, opportunities=1, duration_ms=1)
    )
    view = fold_all(SCAN, log.entries)
    assert [o.id for o in view.ranked_opportunities()] == [opp.id]
    assert view.strategies["alpha"].opportunities == 1 and view.strategies["alpha"].attempts == 2


def test_hostile_entries_are_skipped_counted_and_reported() -> None:
    """Invalid JSON, unknown types, missing fields, future versions, huge data: all warnings."""
    log = Log()
    log.add(ev.stamp(ev.ScanRequested, user_id="u1", strategies=["alpha"], params={}))
    hostile = [
        ev.decode_entry(b"1-1", {b"type": b"strategy.started", b"data": b"{not json"}),
        ev.decode_entry(b"1-2", {b"type": b"strategy.exploded", b"data": b"{}"}),
        ev.decode_entry(
            b"1-3", {b"type": b"strategy.started", b"data": b'{"event_id":"x","ts":"t","v":1}'}
        ),
        ev.decode_entry(
            b"1-4",
            {
                b"type": b"strategy.progress",
                b"data": b'{"event_id":"y","ts":"t","v":99,"strategy":"alpha"}',
            },
        ),
        ev.decode_entry(b"1-5", {b"type": b"scan.cancelled", b"data": b"[" * 300_000}),
        ev.decode_entry(b"1-6", {b"nothing": b"here"}),
        ev.decode_entry(b"1-7", None),
    ]
    view = fold(fold_all(SCAN, log.entries), hostile)
    assert view.warnings_count == len(hostile)
    assert view.state == "queued" and view.strategies["alpha"].state == "pending"
    problems = " | ".join(w.problem for w in view.warnings)
    for phrase in (
        "not valid JSON",
        "unknown event type",
        "newer than",
        "over the limit",
        "no fields",
    ):
        assert phrase in problems


def test_an_older_schema_version_is_upcast_and_keeps_folding(monkeypatch: Any) -> None:
    """Given the schema moved to v2 with an upcaster, a v1 entry still folds into the view."""

    def v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "message": raw.get("message", "") + " (from v1)"}

    monkeypatch.setattr(ev, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("strategy.progress", 1), v1_to_v2)
    data = (
        b'{"event_id":"e1","ts":"2026-01-01T00:00:00Z","v":1,'
        b'"strategy":"a","attempt":1,"progress":0.5}'
    )
    entry = ev.decode("5-0", "strategy.progress", data)
    assert isinstance(entry.event, ev.StrategyProgress)
    assert entry.event.v == 2 and entry.event.message == " (from v1)"


def test_event_times_are_utc_milliseconds_that_read_back_to_the_clock() -> None:
    """Every event's `ts`: RFC 3339, UTC, milliseconds, "Z"; read back, it is the clock's
    time within the call (it is formatted from a per-second cache)."""
    for _ in range(3):
        before = time.time_ns() // 1_000_000
        ts = ev.now_rfc3339()
        after = time.time_ns() // 1_000_000
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
        assert before <= ev.ts_ms(ts) <= after
        time.sleep(0.6)  # the next one is in another second at least once
