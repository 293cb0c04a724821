"""Helpers for consumer and fault-injection tests: starting scans the way the API does,
waiting for them, real worker processes (and their JSON logs), and in-process workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scanstream import events as ev
from scanstream.events import LogEntry
from scanstream.settings import Settings
from tests.support.procs import Proc, worker_proc
from tests.support.scans import wait_for

FAULT_MODULES = ("tests.support.strategies", "tests.support.fault_strategies")
# Worker processes in fault tests: JSON logs (the tests read them), a fast reaper.
FAULT_ENV = {"SCANSTREAM_LOG_FORMAT": "json", "SCANSTREAM_REAP_INTERVAL": "0.2"}


def fault_settings(settings: Settings, **changes: Any) -> Settings:
    """Short idle times so faults are noticed in a second or two. A heartbeat at a sixth of
    the idle time leaves a loaded machine 1.25 s of event-loop stall before a healthy
    worker's job looks idle."""
    base: dict[str, Any] = {
        "strategy_modules": FAULT_MODULES,
        "claim_idle_ms": 1_500,
        "heartbeat_ms": 250,
        "retry_backoff_s": 0.05,
    }
    return settings.with_(**{**base, **changes})


def started_events(entries: Sequence[LogEntry]) -> list[tuple[str, ev.StrategyStarted]]:
    return [(e.id, e.event) for e in entries if isinstance(e.event, ev.StrategyStarted)]


def assert_log_is_sound(entries: Sequence[LogEntry]) -> None:
    """One terminal scan event, last; each strategy terminal at most once; each
    opportunity counted once in the terminal event."""
    terminals = [e for e in entries if e.type in ev.TERMINAL_TYPES]
    assert len(terminals) == 1, [e.type for e in terminals]
    assert entries[-1] is terminals[0], "an event was written after the terminal event"
    ends: dict[str, int] = {}
    for e in entries:
        if isinstance(e.event, ev.StrategyCompleted) or (
            isinstance(e.event, ev.StrategyFailed) and e.event.final
        ):
            ends[e.event.strategy] = ends.get(e.event.strategy, 0) + 1
    assert all(n == 1 for n in ends.values()), ends
    found = {e.event.opportunity.id for e in entries if isinstance(e.event, ev.OpportunityFound)}
    end = terminals[0].event
    assert isinstance(end, ev.ScanEnded)
    assert end.opportunities == len(found)


# -- real worker processes ----------------------------------------------------------------


def worker(
    settings: Settings,
    log_dir: Path,
    name: str = "worker",
    concurrency: int = 8,
    grace_s: float = 5.0,
    **env: str,
) -> Proc:
    return worker_proc(
        settings,
        log_dir,
        concurrency=concurrency,
        grace_s=grace_s,
        name=name,
        **{**FAULT_ENV, **env},
    )


def log_records(proc: Proc) -> list[dict[str, Any]]:
    """The JSON log lines a worker process wrote so far (anything else is skipped)."""
    out = []
    if not proc.log_path.exists():
        return out
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


async def consumer_name(proc: Proc, timeout_s: float = 15.0) -> str:
    """Wait until the worker process says it started; its consumer name."""

    def started() -> str | None:
        assert proc.process is not None
        if proc.process.poll() is not None:
            raise AssertionError(f"worker exited: {proc.log_path.read_text()[-3000:]}")
        for r in log_records(proc):
            if "started:" in r.get("message", "") and r.get("worker"):
                return str(r["worker"])
        return None

    return await wait_for(started, timeout_s, "the worker to start")  # type: ignore[no-any-return]
