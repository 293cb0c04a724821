"""The consumer protocol as a hypothesis state machine against the real Redis store.

Rules are what consumers do: a job delivered to a consumer (`start_strategy`), progress
and findings written, an attempt finishing (completed, failed for good, failed with a
retry to follow), a consumer crashing, the job reclaimed by another consumer (a new
attempt; the old holder may still be alive, frozen, and try to write), the scan cancelled
or past its deadline. After every step the log and its fold are checked against a model
of what the fenced writes must have accepted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from scanstream import events as ev
from scanstream.embedded import RedisProcess
from scanstream.projection import ScanView, fold_all
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore, WriteOutcome
from scanstream.storage.keys import Keys
from tests.support.scans import start_scan

T = TypeVar("T")
STRATEGIES = ("alpha", "beta", "gamma")
CONSUMERS = ("w1", "w2", "w3")
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


@dataclass
class Attempt:
    strategy: str
    number: int
    consumer: str


def opportunity(strategy: str, symbol: str) -> ev.Opportunity:
    """Deterministic ids: a re-run finds the same ones."""
    return ev.Opportunity(
        id=f"opp_{strategy}_{symbol}",
        strategy=strategy,
        symbol=symbol,
        side="long",
        score=0.5,
        expected_return=0.01,
    )


class ConsumerProtocol(RuleBasedStateMachine):
    redis_url: ClassVar[str] = ""

    attempts = Bundle("attempts")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = client(self.redis_url, max_connections=4)
        self.store = EventStore(self.redis, Keys("p" + uuid.uuid4().hex[:12]), retention_s=600)
        self.scan_id = self.run(start_scan(self.store, list(STRATEGIES), enqueue=False))
        # The model: what the fence must have accepted.
        self.current = dict.fromkeys(STRATEGIES, 0)  # latest attempt allocated
        self.state = dict.fromkeys(STRATEGIES, "pending")  # as the fold must show it
        self.starts = dict.fromkeys(STRATEGIES, 0)
        self.ended: str | None = None  # the terminal scan type
        self.opportunities: set[str] = set()
        self.accepted_ids: set[str] = set()  # event ids of accepted non-start writes
        self.steps = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    # -- what the fence must answer ---------------------------------------------------

    def expected(self, attempt: Attempt | None, strategy: str) -> str:
        if self.ended:
            return "ended"
        if self.state[strategy] in ("completed", "failed"):
            return "done"
        if attempt is not None and attempt.number != self.current[strategy]:
            return "stale"
        return "ok"

    def _start(self, strategy: str, consumer: str) -> Attempt | None:
        want = self.expected(None, strategy)
        outcome = self.run(self.store.start_strategy(self.scan_id, strategy, consumer))
        assert outcome.status == want, (outcome, want)
        if not outcome.ok:
            return None
        assert outcome.attempt == self.current[strategy] + 1
        self.current[strategy] = outcome.attempt
        self.starts[strategy] += 1
        self.state[strategy] = "running"
        return Attempt(strategy, outcome.attempt, consumer)

    def _accepted(self, outcome: WriteOutcome, want: str, events: list[ev.Event]) -> bool:
        assert outcome.status == want, (outcome, want)
        if outcome.ok:
            self.accepted_ids |= {e.event_id for e in events}
        return outcome.ok

    # -- rules --------------------------------------------------------------------------

    @rule(
        target=attempts, strategy=st.sampled_from(STRATEGIES), consumer=st.sampled_from(CONSUMERS)
    )
    def deliver(self, strategy: str, consumer: str) -> Any:
        """A job delivered to a consumer for the first time, or reclaimed by one (its
        holder crashed or froze): either way a new attempt."""
        self.steps += 1
        started = self._start(strategy, consumer)
        return started if started is not None else multiple()  # refused: nothing new

    @rule(
        attempt=attempts,
        symbols=st.lists(st.sampled_from(SYMBOLS), max_size=3, unique=True),
        progress=st.floats(0, 1),
    )
    def write(self, attempt: Attempt, symbols: list[str], progress: float) -> None:
        """A consumer (current or superseded but still alive) writes progress and findings."""
        self.steps += 1
        events: list[ev.Event] = [
            ev.stamp(
                ev.OpportunityFound,
                strategy=attempt.strategy,
                attempt=attempt.number,
                opportunity=opportunity(attempt.strategy, s),
            )
            for s in symbols
        ]
        events.append(
            ev.stamp(
                ev.StrategyProgress,
                strategy=attempt.strategy,
                attempt=attempt.number,
                progress=progress,
            )
        )
        want = self.expected(attempt, attempt.strategy)
        outcome = self.run(
            self.store.append_strategy_events(
                self.scan_id, attempt.strategy, attempt.number, events
            )
        )
        if self._accepted(outcome, want, events):
            self.opportunities |= {f"opp_{attempt.strategy}_{s}" for s in symbols}

    @rule(
        attempt=consumes(attempts),
        how=st.sampled_from(["completed", "failed", "retry"]),
        symbols=st.lists(st.sampled_from(SYMBOLS), max_size=2, unique=True),
    )
    def finish(self, attempt: Attempt, how: str, symbols: list[str]) -> None:
        """A consumer's attempt ends: completed, failed for good, or failed with a retry
        to follow (the same consumer starts the next attempt)."""
        self.steps += 1
        s = attempt.strategy
        events: list[ev.Event] = [
            ev.stamp(
                ev.OpportunityFound,
                strategy=s,
                attempt=attempt.number,
                opportunity=opportunity(s, x),
            )
            for x in symbols
        ]
        if how == "completed":
            events.append(
                ev.stamp(
                    ev.StrategyCompleted,
                    strategy=s,
                    attempt=attempt.number,
                    opportunities=len(symbols),
                    duration_ms=1,
                )
            )
        else:
            events.append(
                ev.stamp(
                    ev.StrategyFailed,
                    strategy=s,
                    attempt=attempt.number,
                    error=ev.ErrorInfo(type="E", message="boom"),
                    final=how == "failed",
                )
            )
        want = self.expected(attempt, s)
        outcome = self.run(self.store.finish_strategy(self.scan_id, s, attempt.number, events))
        if not self._accepted(outcome, want, events):
            assert outcome.terminal is None
            return
        self.opportunities |= {f"opp_{s}_{x}" for x in symbols}
        self.state[s] = {"completed": "completed", "failed": "failed", "retry": "pending"}[how]
        if all(v in ("completed", "failed") for v in self.state.values()):
            completed = any(v == "completed" for v in self.state.values())
            self.ended = "scan.completed" if completed else "scan.failed"
            assert outcome.terminal == self.ended
        else:
            assert outcome.terminal is None

    @rule(attempt=consumes(attempts))
    def crash(self, attempt: Attempt) -> None:
        """The consumer holding this attempt dies: it never writes again."""
        self.steps += 1

    @precondition(lambda self: self.steps >= 12)
    @rule(deadline=st.booleans())
    def end_from_outside(self, deadline: bool) -> None:
        """The scan is cancelled, or passes its deadline (ends with what it has)."""
        self.steps += 1
        if deadline:
            status, detail = self.run(self.store.end_overdue_scan(self.scan_id))
        else:
            status, detail = self.run(self.store.end_scan(self.scan_id, "scan.cancelled"))
        if self.ended:
            assert (status, detail) == ("ended", self.ended)
            return
        assert status == "ok"
        if deadline:
            completed = any(v == "completed" for v in self.state.values())
            self.ended = "scan.completed" if completed else "scan.failed"
            assert detail == self.ended
        else:
            self.ended = "scan.cancelled"

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def the_log_and_its_fold_agree_with_the_fence(self) -> None:
        entries = self.run(self.store.read(self.scan_id))
        assert all(e.event is not None for e in entries), [e.problem for e in entries]
        view = fold_all(self.scan_id, entries)
        self._check_log(entries)
        self._check_view(view)

    def _check_log(self, entries: list[ev.LogEntry]) -> None:
        terminals = [e for e in entries if e.type in ev.TERMINAL_TYPES]
        if self.ended:
            assert [e.type for e in terminals] == [self.ended]
            assert entries[-1] is terminals[0]  # nothing after the terminal event
            end = terminals[0].event
            assert isinstance(end, ev.ScanEnded)
            assert end.opportunities == len(self.opportunities)
            assert end.strategies_completed == list(self.state.values()).count("completed")
            assert end.strategies_failed == list(self.state.values()).count("failed")
        else:
            assert terminals == []
        strategy_ends: dict[str, int] = {}
        starts: dict[str, int] = dict.fromkeys(STRATEGIES, 0)
        written: set[str] = set()
        for e in entries:
            event = e.event
            if isinstance(event, ev.StrategyStarted):
                starts[event.strategy] += 1
            elif isinstance(event, ev.StrategyCompleted) or (
                isinstance(event, ev.StrategyFailed) and event.final
            ):
                strategy_ends[event.strategy] = strategy_ends.get(event.strategy, 0) + 1
            if e.type not in ev.TERMINAL_TYPES and not isinstance(
                event, ev.ScanRequested | ev.StrategyStarted
            ):
                assert event is not None
                written.add(event.event_id)
        assert all(n == 1 for n in strategy_ends.values()), strategy_ends
        assert starts == self.starts
        assert written == self.accepted_ids  # refused writes left nothing behind

    def _check_view(self, view: ScanView) -> None:
        assert set(view.opportunities) == self.opportunities
        assert sum(s.opportunities for s in view.strategies.values()) == len(self.opportunities)
        for name, strategy in view.strategies.items():
            want = self.state[name]
            if self.ended and want not in ("completed", "failed"):
                want = "cancelled"
            assert strategy.state == want, (name, strategy.state, want)
            assert strategy.attempts == self.current[name]
        if self.ended:
            assert view.state == self.ended.removeprefix("scan.")
        else:
            assert view.state == ("running" if any(self.starts.values()) else "queued")


def test_any_interleaving_of_deliveries_crashes_and_reclaims_is_sound(
    redis_server: RedisProcess,
) -> None:
    """Any interleaving of deliveries, writes, crashes, reclaims, stale writes and ends
    leaves each strategy terminal once, each opportunity once, one terminal scan event,
    and a fold equal to what the fenced writes accepted."""
    ConsumerProtocol.redis_url = redis_server.url
    run_state_machine_as_test(
        ConsumerProtocol,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
