"""What a running strategy sees: its params, market data, and fenced progress/finding writes.

The context lives where the strategy runs (the worker's loop, a strategy thread, or a
strategy process); its writes go through `write`, which the isolation mode connects to
the worker's loop, where the fenced store calls are made. `write` answers the fenced
write's status (`ok`, `ended`, `stale`, `done`, `missing`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from scanstream import events as ev
from scanstream.events import Opportunity
from scanstream.strategies.api import ContextBase, StrategyStopped

# Progress writes closer together than this are coalesced (findings are never dropped).
PROGRESS_INTERVAL_S = 0.05

Pairs = list[tuple[str, bytes]]  # encoded events: (type, data) of their stream entries
WriteFn = Callable[[Pairs], Awaitable[str]]


class RunContext(ContextBase):
    """A `StrategyContext` for one attempt. Findings are buffered and written with the next
    progress report or with the attempt's final event, one fenced write each time."""

    def __init__(
        self,
        write: WriteFn,
        *,
        scan_id: str,
        strategy: str,
        attempt: int,
        params: Mapping[str, Any],
        market_factory: Callable[[Mapping[str, Any]], Any],
        max_findings: int = 0,
    ) -> None:
        super().__init__(
            scan_id=scan_id,
            strategy=strategy,
            attempt=attempt,
            params=params,
            market_factory=market_factory,
        )
        self._write = write
        self._max_findings = max_findings  # 0: no cap
        self._dropped_ids: set[str] = set()
        self._pending: list[ev.Event] = []
        self._last_progress_write = 0.0
        self.stop_reason: str | None = None  # set from outside: "cancelled" or "lost"

    # -- the rest of the StrategyContext protocol ----------------------------------------

    @property
    def cancelled(self) -> bool:
        return self.stop_reason is not None

    @property
    def findings_dropped(self) -> int:
        """Distinct findings past the cap: counted, never written."""
        return len(self._dropped_ids)

    async def found(self, opportunity: Opportunity) -> None:
        self._raise_if_stopped()
        if self._max_findings and self.found_count >= self._max_findings:
            if not self.seen(opportunity):
                self._dropped_ids.add(opportunity.id)
            return
        if not self._first_sighting(opportunity):
            return
        self._pending.append(
            ev.stamp(
                ev.OpportunityFound,
                strategy=self.strategy,
                attempt=self.attempt,
                opportunity=opportunity,
            )
        )

    async def progress(self, fraction: float, message: str = "") -> None:
        self._raise_if_stopped()
        now = time.monotonic()
        if not self._pending and now - self._last_progress_write < PROGRESS_INTERVAL_S:
            return
        self._last_progress_write = now
        self._pending.append(
            ev.stamp(
                ev.StrategyProgress,
                strategy=self.strategy,
                attempt=self.attempt,
                progress=min(1.0, max(0.0, float(fraction))),
                message=message[:200],
            )
        )
        await self.flush()

    # -- used by the attempt ------------------------------------------------------------

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._check(await self._write(ev.pairs(batch)))

    def take_pending(self) -> Pairs:
        batch, self._pending = self._pending, []
        return ev.pairs(batch)

    def _check(self, status: str) -> None:
        if status == "ended":
            self.stop_reason = "cancelled"
        elif status in ("stale", "done", "missing"):
            self.stop_reason = "lost"
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if self.stop_reason is not None:
            raise StrategyStopped(self.stop_reason)
