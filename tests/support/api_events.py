"""Helpers for API tests: tokens, and strategy events written straight through the store
(standing in for a worker)."""

from __future__ import annotations

from collections.abc import Sequence

from scanstream.api.auth import make_token
from scanstream.events import (
    Opportunity,
    OpportunityFound,
    StrategyCompleted,
    StrategyProgress,
    stamp,
)
from scanstream.storage.events import EventStore
from tests.conftest import SECRET


def auth(user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, user)}"}


def opportunity(strategy: str, symbol: str, score: float, blob: str = "") -> Opportunity:
    """A finding with a predictable id; `blob` pads its details (to make entries large)."""
    return Opportunity(
        id=f"opp_{strategy}_{symbol}",
        strategy=strategy,
        symbol=symbol,
        side="long",
        score=score,
        expected_return=score / 100,
        details={"blob": blob} if blob else {},
    )


async def start(store: EventStore, scan_id: str, strategy: str) -> int:
    outcome = await store.start_strategy(scan_id, strategy, "test-worker")
    assert outcome.ok, outcome
    return outcome.attempt


async def progress(
    store: EventStore,
    scan_id: str,
    strategy: str,
    attempt: int,
    fraction: float,
    finds: Sequence[tuple[str, float]] = (),
) -> None:
    events: list[object] = [
        stamp(
            OpportunityFound,
            strategy=strategy,
            attempt=attempt,
            opportunity=opportunity(strategy, symbol, score),
        )
        for symbol, score in finds
    ]
    events.append(
        stamp(
            StrategyProgress,
            strategy=strategy,
            attempt=attempt,
            progress=fraction,
            message=f"{fraction:.0%}",
        )
    )
    outcome = await store.append_strategy_events(scan_id, strategy, attempt, events)  # type: ignore[arg-type]
    assert outcome.ok, outcome


async def complete(
    store: EventStore, scan_id: str, strategy: str, attempt: int, found: int
) -> str | None:
    """Finish the strategy; returns the terminal scan event type if this ended the scan."""
    outcome = await store.finish_strategy(
        scan_id,
        strategy,
        attempt,
        [
            stamp(
                StrategyCompleted,
                strategy=strategy,
                attempt=attempt,
                opportunities=found,
                duration_ms=5,
            ),
        ],
    )
    assert outcome.ok, outcome
    return outcome.terminal


async def run(
    store: EventStore, scan_id: str, strategy: str, finds: Sequence[tuple[str, float]] = ()
) -> str | None:
    """A whole successful attempt of one strategy."""
    attempt = await start(store, scan_id, strategy)
    await progress(store, scan_id, strategy, attempt, 0.5, finds)
    return await complete(store, scan_id, strategy, attempt, len(finds))
