"""Real scans for the replay tests: a real `Worker` in this process, real Redis, the real
built-in strategies and the test strategies, on a small synthetic market.

`python -m tests.support.replay_scans DIR` writes golden logs (see tests/golden/README.md).
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from scanstream import events as ev
from scanstream.projection import ScanView, fold_all
from scanstream.settings import Settings
from scanstream.storage.connection import client
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys
from scanstream.strategies.api import Strategy
from scanstream.strategies.registry import load_strategies
from tests.support.scans import start_scan, workers_running

SMALL_MARKET = {
    "symbols": ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD"],
    "bars": 300,
    "seed": 42,
}
# Every event type but cancellation: retries (flaky), a final failure (poison), progress
# (slow), findings of built-ins and of test strategies.
MIXED = [
    "momentum",
    "mean_reversion",
    "breakout",
    "cross_venue_arbitrage",
    "finder",
    "flaky",
    "poison",
    "slow",
    "noop",
]
MIXED_PARAMS = {**SMALL_MARKET, "finds": 3, "slow_s": 0.2}


def strategies(settings: Settings) -> dict[str, Strategy]:
    return load_strategies(settings.strategy_modules)


async def wait(
    store: EventStore,
    scan_id: str,
    *,
    strategies: Sequence[str] | None = None,
    timeout_s: float = 15.0,
) -> ScanView:
    """Until the scan ended, or (given `strategies`) until each of those is terminal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = fold_all(scan_id, await store.read(scan_id))
        if view.terminal:
            return view
        if strategies is not None and all(view.strategies[s].terminal for s in strategies):
            return view
        await anyio.sleep(0.02)
    raise AssertionError(f"{scan_id} did not get there within {timeout_s}s")


async def run_scan(
    settings: Settings,
    names: Sequence[str] = tuple(MIXED),
    params: dict[str, Any] | None = None,
    *,
    user: str = "alice",
    enqueue: Sequence[str] | None = None,
    cancel_after_s: float | None = None,
) -> str:
    """Run one real scan to its end (or, with `enqueue`, until those jobs are done)."""
    redis = client(settings.redis_url or "")
    store = EventStore(
        redis, Keys(settings.prefix, settings.job_partitions), retention_s=settings.retention_s
    )
    try:
        async with workers_running(settings, strategies(settings), concurrency=16):
            scan_id = await start_scan(
                store,
                names,
                MIXED_PARAMS if params is None else params,
                user_id=user,
                enqueue=True if enqueue is None else enqueue,
            )
            if cancel_after_s is not None:
                await anyio.sleep(cancel_after_s)
                await store.end_scan(
                    scan_id,
                    "scan.cancelled",
                    before=[ev.stamp(ev.ScanCancelRequested, user_id=user)],
                )
            await wait(store, scan_id, strategies=enqueue)
    finally:
        await redis.aclose()
    return scan_id


TEST_SECRET = "test-secret-not-for-production"  # the same as tests/conftest.py
_shared: dict[tuple[str, str], tuple[Settings, str]] = {}


def scan_settings(redis_url: str, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        secret=TEST_SECRET,
        prefix=prefix,
        retention_s=3600,
        strategy_modules=("tests.support.strategies",),
        claim_idle_ms=1500,
        heartbeat_ms=300,
        retry_backoff_s=0.05,
    )


def shared_scan(redis_url: str, kind: str = "mixed") -> tuple[Settings, str]:
    """One real scan per kind for the whole session (read it, never write to it)."""
    key = (redis_url, kind)
    if key not in _shared:
        settings = scan_settings(redis_url, f"replay{kind}{uuid.uuid4().hex[:8]}")
        if kind == "mixed":
            scan_id = anyio.run(run_scan, settings)
        elif kind == "unfinished":  # noop is requested but never enqueued: it stays pending
            scan_id = anyio.run(
                lambda: run_scan(settings, ["finder", "flaky", "noop"], enqueue=["finder", "flaky"])
            )
        else:
            raise ValueError(kind)
        _shared[key] = (settings, scan_id)
    return _shared[key]


def golden(directory: Path) -> None:
    """Write `v<N>-<name>.jsonl` plus its status and results, for this schema version."""
    from scanstream.embedded import RedisProcess
    from scanstream.replay import load_log
    from scanstream.replay.exchange import export_log
    from scanstream.replay.travel import state_at

    version = ev.SCHEMA_VERSION
    with tempfile.TemporaryDirectory(prefix="scanstream-golden-") as tmp:
        server = RedisProcess(data_dir=Path(tmp)).start()
        try:
            settings = Settings(
                redis_url=server.url,
                prefix="golden",
                retention_s=3600,
                strategy_modules=("tests.support.strategies",),
                claim_idle_ms=1500,
                heartbeat_ms=300,
                retry_backoff_s=0.05,
            )
            runs = {
                "completed": anyio.run(run_scan, settings),
                "cancelled": anyio.run(
                    lambda: run_scan(
                        settings,
                        ["finder", "slow"],
                        {**SMALL_MARKET, "slow_s": 5},
                        cancel_after_s=0.5,
                    )
                ),
            }
            for name, scan_id in runs.items():
                log = load_log(scan_id, settings=settings)
                base = directory / f"v{version}-{name}"
                export_log(log, base.with_suffix(".jsonl"))
                snap = state_at(log.scan_id, log.entries)
                for part, value in (("status", snap.status), ("results", snap.results)):
                    Path(f"{base}.{part}.json").write_bytes(
                        msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"
                    )
                print(f"{base}.jsonl: {len(log.entries)} entries, {snap.status['state']}")
        finally:
            server.stop()


if __name__ == "__main__":
    golden(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden"))
