"""The write scripts' interface: Python encodes the bodies and hands the scripts what they
decide with (strategy names, per-event notes, the schema version); the one body a script
builds, the terminal event's, keeps the layout of the golden logs."""

from __future__ import annotations

import json

import pytest

from scanstream import events as ev
from scanstream.storage.events import EventStore, fence_note
from tests.support.scans import start_scan

pytestmark = pytest.mark.anyio

# The terminal body's fields in the order every stored log has them (tests/golden).
TERMINAL_FIELDS = [
    "ts",
    "event_id",
    "strategies_completed",
    "duration_ms",
    "strategies_failed",
    "opportunities",
    "v",
]


def found(strategy: str, attempt: int, opportunity_id: str) -> ev.OpportunityFound:
    return ev.stamp(
        ev.OpportunityFound,
        strategy=strategy,
        attempt=attempt,
        opportunity=ev.Opportunity(
            id=opportunity_id,
            strategy=strategy,
            symbol="AAA",
            side="long",
            score=0.5,
            expected_return=0.01,
        ),
    )


async def terminal_body(store: EventStore, scan_id: str) -> dict[str, object]:
    raw = await store.redis.xrevrange(store.keys.events(scan_id), count=1)
    fields = raw[0][1]
    assert fields[b"type"].decode() in ev.TERMINAL_TYPES
    return json.loads(fields[b"data"])  # type: ignore[no-any-return]


def test_the_note_of_an_event_is_what_the_fence_needs() -> None:
    """An opportunity.found is noted by its opportunity id, a final strategy.failed as
    final, anything else (a failure with a retry to follow included) not at all."""
    error = ev.ErrorInfo(type="E", message="m")
    failed = [
        ev.stamp(ev.StrategyFailed, strategy="a", attempt=1, error=error, final=final)
        for final in (True, False)
    ]
    pairs = ev.pairs([found("a", 1, "opp_1"), *failed])
    assert [fence_note(t, d) for t, d in pairs] == ["opp_1", "final", ""]


async def test_a_terminal_event_carries_the_schema_version_the_store_passes(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the code's schema version raised to 2, when a scan completes (strategy_write)
    and another is cancelled (end_scan), then both terminal bodies say v 2, with the
    fields of the golden logs in their order."""
    monkeypatch.setattr(ev, "SCHEMA_VERSION", 2)
    completed = await start_scan(store, ["a"], enqueue=False)
    started = await store.start_strategy(completed, "a", "w")
    done = ev.stamp(
        ev.StrategyCompleted, strategy="a", attempt=started.attempt, opportunities=0, duration_ms=1
    )
    outcome = await store.finish_strategy(completed, "a", started.attempt, [done])
    assert outcome.terminal == "scan.completed"
    cancelled = await start_scan(store, ["a"], enqueue=False)
    assert (await store.end_scan(cancelled, "scan.cancelled"))[0] == "ok"
    for scan_id in (completed, cancelled):
        body = await terminal_body(store, scan_id)
        assert list(body) == TERMINAL_FIELDS and body["v"] == 2


async def test_the_fence_counts_what_python_notes(store: EventStore) -> None:
    """Given a scan of two strategies, when one finds the same opportunity twice and
    another, then fails for good, and the other completes, then the scan ends failed for
    one and completed for the other, counting two distinct opportunities."""
    scan_id = await start_scan(store, ["a", "b"], enqueue=False)
    a = (await store.start_strategy(scan_id, "a", "w")).attempt
    finds = [found("a", a, "opp_1"), found("a", a, "opp_1"), found("a", a, "opp_2")]
    assert (await store.append_strategy_events(scan_id, "a", a, finds)).ok
    error = ev.ErrorInfo(type="E", message="m")
    failed = ev.stamp(ev.StrategyFailed, strategy="a", attempt=a, error=error, final=True)
    assert (await store.finish_strategy(scan_id, "a", a, [failed])).terminal is None
    b = (await store.start_strategy(scan_id, "b", "w")).attempt
    done = ev.stamp(ev.StrategyCompleted, strategy="b", attempt=b, opportunities=0, duration_ms=1)
    assert (await store.finish_strategy(scan_id, "b", b, [done])).terminal == "scan.completed"
    body = await terminal_body(store, scan_id)
    counts = {k: body[k] for k in ("strategies_completed", "strategies_failed", "opportunities")}
    assert counts == {"strategies_completed": 1, "strategies_failed": 1, "opportunities": 2}


async def test_a_scan_knows_its_strategies_from_the_names_it_was_created_with(
    store: EventStore,
) -> None:
    """Given a scan of strategy a, a write for strategy b is refused as `missing`: the
    fence lists the names the store passed at creation."""
    scan_id = await start_scan(store, ["a"], enqueue=False)
    assert (await store.start_strategy(scan_id, "b", "w")).status == "missing"
    assert (await store.start_strategy(scan_id, "a", "w")).ok
