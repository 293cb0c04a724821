"""Quotas and cost limits on new scans, over a real server and a real Redis: a user's
active scans and scans per minute (`429 rate_limited` with Retry-After), the size of
`params` and the work a scan asks for (`422` naming the limit). Nothing is written for a
refused request, and one user's limit never touches another user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scanstream import events as ev
from scanstream.api import create_app
from scanstream.limits import scan_cost
from scanstream.market.params import parse_params
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from tests.support import strategies as ts
from tests.support.api_events import auth
from tests.support.backends import on_both_backends
from tests.support.http import serve
from tests.support.scans import start_scan, wait_until_ended, workers_running

pytestmark = pytest.mark.anyio


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.with_(user_max_active_scans=5, user_scans_per_minute=1000)


@pytest.fixture
def api(limited: Settings) -> Iterator[str]:
    with serve(create_app(limited)) as url:
        yield url


async def post(api: str, user: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api, headers=auth(user), timeout=30) as c:
        return await c.post(
            "/v1/scans", json=body if body is not None else {"strategies": ["noop"]}
        )


async def listed(api: str, user: str) -> int:
    async with httpx.AsyncClient(base_url=api, headers=auth(user), timeout=30) as c:
        return len((await c.get("/v1/scans", params={"limit": 100})).json()["scans"])


@on_both_backends
async def test_the_active_scan_cap_refuses_the_next_one_until_one_ends(api: str) -> None:
    """USER_MAX_ACTIVE_SCANS=5: alice's 6th scan is 429 with Retry-After, bob is not
    affected, and once one of hers ends she may start another."""
    first = [await post(api, "alice") for _ in range(5)]
    assert [r.status_code for r in first] == [202] * 5
    sixth = await post(api, "alice")
    assert sixth.status_code == 429
    assert sixth.json()["error"] == "rate_limited"
    assert "SCANSTREAM_USER_MAX_ACTIVE_SCANS" in sixth.json()["detail"]
    assert int(sixth.headers["Retry-After"]) >= 1
    assert (await post(api, "bob")).status_code == 202
    assert await listed(api, "alice") == 5  # the refused one left nothing behind
    async with httpx.AsyncClient(base_url=api, headers=auth("alice"), timeout=30) as c:
        cancelled = await c.post(f"/v1/scans/{first[0].json()['scan_id']}/cancel")
    assert cancelled.status_code == 202
    assert (await post(api, "alice")).status_code == 202
    assert (await post(api, "alice")).status_code == 429


async def test_scans_per_minute_is_a_token_bucket_per_user(settings: Settings) -> None:
    """USER_SCANS_PER_MINUTE=3: a fourth scan within the minute is 429, and Retry-After
    says when the next token comes (20 s apart at 3 a minute); bob has his own bucket."""
    with serve(create_app(settings.with_(user_scans_per_minute=3))) as api:
        answers = [await post(api, "alice") for _ in range(4)]
        bobs = await post(api, "bob")
    assert [r.status_code for r in answers] == [202, 202, 202, 429]
    assert "SCANSTREAM_USER_SCANS_PER_MINUTE" in answers[3].json()["detail"]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 20
    assert bobs.status_code == 202


async def test_params_over_the_size_cap_are_422_naming_the_limit(api: str) -> None:
    body = {"strategies": ["noop"], "params": {"note": "x" * 9000}}
    refused = await post(api, "alice", body)
    assert refused.status_code == 422
    assert "SCANSTREAM_MAX_PARAMS_BYTES" in refused.json()["detail"]
    assert await listed(api, "alice") == 0


async def test_a_scan_asking_for_too_much_work_is_422_naming_the_limit(api: str) -> None:
    """The amplification request (pairs over 200 symbols x 1,250 bars) is refused before
    anything is written; the default universe with every built-in strategy is not."""
    symbols = [f"S{i:03d}" for i in range(200)]
    market = {"symbols": symbols, "venues": ["alpha"], "bars": 1250}  # 250,000 bars: allowed
    body = {"strategies": ["pairs_spread"], "params": market}
    refused = await post(api, "alice", body)
    assert refused.status_code == 422, refused.text
    assert "SCANSTREAM_MAX_SCAN_COST" in refused.json()["detail"]
    assert await listed(api, "alice") == 0
    everything = await post(api, "alice", {})  # all 14 built-in strategies, default market
    assert everything.status_code == 202, everything.text


def test_the_cost_estimate_counts_pairs_as_pairs() -> None:
    market = parse_params({"symbols": ["A", "B", "C", "D"], "venues": ["x"], "bars": 100})
    assert scan_cost(market, ["series"]) == 4 * 100
    assert scan_cost(market, ["pairs"]) == 6 * 100
    assert scan_cost(market, ["series", "series", "pairs"]) == (4 + 4 + 6) * 100
    default = parse_params({})
    assert scan_cost(default, ["series"] * 13 + ["pairs"]) < Settings().max_scan_cost


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_findings_past_the_cap_are_counted_not_written(
    settings: Settings, isolation: str
) -> None:
    """MAX_FINDINGS_PER_STRATEGY=4: a strategy finding 10 writes 4, and its
    strategy.completed says 6 were dropped; the scan completes."""
    capped = settings.with_(max_findings_per_strategy=4, isolation=isolation)
    storage = Storage.connect(capped)
    try:
        async with workers_running(capped, {"finder": ts.finder}):
            scan_id = await start_scan(storage.events, ["finder"], {"finds": 10})
            view = await wait_until_ended(storage.events, scan_id, timeout_s=30)
        entries = await storage.events.read(scan_id)
    finally:
        await storage.aclose()
    [completed] = [e.event for e in entries if isinstance(e.event, ev.StrategyCompleted)]
    found = [e for e in entries if isinstance(e.event, ev.OpportunityFound)]
    assert view.state == "completed"
    assert len(found) == 4 and len(view.opportunities) == 4
    assert (completed.opportunities, completed.findings_dropped) == (4, 6)


async def test_progress_past_the_events_cap_is_dropped_and_the_scan_still_completes(
    settings: Settings,
) -> None:
    """MAX_EVENTS_PER_SCAN=8: a strategy reporting progress 20 times leaves a log of about
    that size, with every finding and its lifecycle events, and the scan completes."""
    capped = settings.with_(max_events_per_scan=8)
    storage = Storage.connect(capped)
    try:
        async with workers_running(capped, {"slow": ts.slow}):
            scan_id = await start_scan(storage.events, ["slow"], {"slow_s": 1.0, "finds": 3})
            view = await wait_until_ended(storage.events, scan_id, timeout_s=30)
        types = [e.type for e in await storage.events.read(scan_id)]
    finally:
        await storage.aclose()
    assert view.state == "completed" and len(view.opportunities) == 3
    assert types.count("strategy.progress") <= 8 - 2  # scan.requested and strategy.started
    assert types.count("opportunity.found") == 3
    assert types[-2:] == ["strategy.completed", "scan.completed"]
