"""The dashboard in headless Chromium (Playwright): sign in, start a scan, watch it reach
100% live, compare the table with /results, and survive the server closing the stream."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from scanstream.api.app import create_app
from scanstream.api.auth import issue, read_token
from scanstream.live.fanout import Fanout
from scanstream.settings import Settings
from tests.conftest import SECRET
from tests.support.browser import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS
from tests.support.http import serve
from tests.support.sse import bearer, read_log, token, wait_for_metric, worker_running

pytestmark = BROWSER_MARKS
STRATEGIES = [
    "momentum",
    "mean_reversion",
    "breakout",
    "rsi",
    "bollinger_squeeze",
    "pairs_spread",
    "funding_carry",
    "basis_carry",
]
PACE_MS = 120  # ~40 paced steps per strategy: the scan takes a few seconds
REPO = Path(__file__).resolve().parent.parent
ROW_IDS = "rows => rows.map(r => r.dataset.id)"
# The page's fold of each strategy, in the shape of the status object's `strategies`.
PAGE_FOLD = """() => [...window.scanstream.current.view.strategies.values()].map(s => ({
    name: s.name, state: s.state, attempts: s.attempts, opportunities: s.opportunities,
    progress: Math.round(s.progress * 10000) / 10000, error: s.error,
    started_at: s.started_at, finished_at: s.finished_at}))"""
FOLDED = (
    "name",
    "state",
    "attempts",
    "opportunities",
    "progress",
    "error",
    "started_at",
    "finished_at",
)


async def assert_page_folds_like_the_server(
    page: Any, api: httpx.AsyncClient, scan_id: str
) -> None:
    """The page's client-side fold agrees with the server's projection, field by field."""
    status = (await api.get(f"/v1/scans/{scan_id}", headers=bearer())).json()
    expected = [{k: s[k] for k in FOLDED} for s in status["strategies"]]
    assert await page.evaluate(PAGE_FOLD) == expected


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, Fanout]]:
    app = create_app(settings.with_(sse_heartbeat_s=1.0))
    with serve(app) as base:
        yield base, app.state.live


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # bypass_csp: Playwright's waits evaluate script text, which the page's CSP forbids
        context = await browser.new_context(
            viewport={"width": 1440, "height": 1000}, bypass_csp=True
        )
        pg = await context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        yield pg
        await pg.screenshot(path=str(tmp_path / "dashboard-final.png"), full_page=True)
        await browser.close()
        assert errors == [], f"the page raised: {errors}"


async def overall(page: Any) -> str:
    text: str = await page.text_content("#overall-pct")
    return text


async def test_the_dashboard_runs_a_scan_live_and_recovers_from_a_closed_stream(
    server: tuple[str, Fanout], settings: Settings, page: Any, tmp_path: Path
) -> None:
    """The page runs a scan live to 100%, survives a dropped stream, and matches /results."""
    base, live = server
    async with (
        worker_running(settings, STRATEGIES, concurrency=4),
        httpx.AsyncClient(base_url=base, timeout=20.0) as api,
    ):
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        await page.goto(base + "/")
        await page.fill("#token-input", token())
        await page.click("#token-save")
        await page.wait_for_selector("#strategy-pick input[value='momentum']")
        assert "alice" in (await page.text_content("#whoami") or "")
        await page.click("#select-none")
        for name in STRATEGIES:
            await page.check(f"#strategy-pick input[value='{name}']")
        await page.fill("#params", f'{{"pace_ms": {PACE_MS}}}')
        await page.click("#start")

        await page.wait_for_function("() => window.scanstream.current?.view.state === 'running'")
        scan_id = await page.evaluate("() => window.scanstream.current.id")
        await page.wait_for_function(
            "() => { const p = parseInt(document.getElementById('overall-pct').textContent);"
            " return p >= 15 && p < 80; }",
            timeout=30_000,
        )
        await page.screenshot(path=str(tmp_path / "dashboard-running.png"), full_page=True)

        # The server closes the stream mid-scan: EventSource must resume by itself.
        assert live.loop is not None
        live.loop.call_soon_threadsafe(live.drop_all)
        await page.wait_for_function("() => window.scanstream.current.reconnects >= 1")
        await wait_for_metric(api, "scanstream_sse_following", 1, timeout_s=10)
        assert int((await overall(page)).rstrip("%")) < 100, "the scan ended before the drop"

        await page.wait_for_function(
            "() => document.getElementById('overall-pct').textContent === '100%'"
            " && window.scanstream.current.results !== null",
            timeout=60_000,
        )
        await anyio.sleep(0.3)  # let the last render land
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        (REPO / "test-output").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "test-output" / "dashboard.png")

        results = (await api.get(f"/v1/scans/{scan_id}/results", headers=bearer())).json()
        log_ids = [e["id"] for e in await read_log(api, scan_id)]
        page_state = await page.evaluate(
            "() => { const c = window.scanstream.current; return {received: c.received,"
            " duplicates: c.duplicates, mismatch: c.mismatch, reconnects: c.reconnects}; }"
        )
        await assert_page_folds_like_the_server(page, api, scan_id)
        row_ids = await page.eval_on_selector_all("#opps tbody tr", ROW_IDS)
        states = await page.eval_on_selector_all(
            "#strategies tbody tr", "rows => rows.map(r => [r.dataset.strategy, r.dataset.state])"
        )

    assert results["state"] == "completed" and results["opportunities"]
    # The long-lived token never went into a URL; each event-stream connection carried a
    # stream token of its own, for this scan only.
    assert not [u for u in urls if token() in u]
    streamed = [parse_qs(urlsplit(u).query) for u in urls if u.split("?")[0].endswith("/events")]
    stream_tokens = [q["access_token"][0] for q in streamed]
    assert len(stream_tokens) >= 2 and len(set(stream_tokens)) == len(stream_tokens)
    assert {read_token(SECRET, t).scan_id for t in stream_tokens} == {scan_id}
    assert page_state["received"] == log_ids  # every event once, in order, across the drop
    assert page_state["duplicates"] == 0 and page_state["mismatch"] is False
    assert page_state["reconnects"] >= 1
    assert row_ids == [o["id"] for o in results["opportunities"]]
    assert sorted(states) == sorted([name, "completed"] for name in STRATEGIES)
    assert await page.text_content("#scan-state") == "completed"


async def test_the_dashboard_lists_past_scans_and_opens_a_finished_one(
    server: tuple[str, Fanout], settings: Settings, page: Any
) -> None:
    """A finished scan with retries and failures opens from the list, folded as the server does."""
    base, _ = server
    names = ["momentum", "rsi", "flaky", "poison"]
    async with (
        worker_running(settings, names),
        httpx.AsyncClient(base_url=base, timeout=20.0) as api,
    ):
        created = await api.post("/v1/scans", json={"strategies": names}, headers=bearer())
        scan_id = created.json()["scan_id"]
        done = await api.get(
            f"/v1/scans/{scan_id}/results", params={"wait": "30"}, headers=bearer()
        )
        assert done.json()["complete"]
        await page.goto(f"{base}/#token={token()}")
        await page.wait_for_selector(f"#scan-list li[data-scan='{scan_id}']")
        assert "token=" not in page.url
        await page.click(f"#scan-list li[data-scan='{scan_id}']")
        await page.wait_for_function(
            "() => window.scanstream.current?.results !== null"
            " && window.scanstream.current?.results !== undefined"
        )
        source = await page.evaluate("() => window.scanstream.current.source")
        row_ids = await page.eval_on_selector_all("#opps tbody tr", ROW_IDS)
        segments = await page.eval_on_selector_all(
            "#timeline .seg", "s => s.map(e => e.className.split(' ')[1])"
        )
        await assert_page_folds_like_the_server(page, api, scan_id)
        sorted_by = {}
        for column, clicks in (("symbol", 1), ("expected_return", 2), ("score", 1)):
            for _ in range(clicks):
                await page.click(f"#opps th[data-key='{column}']")
            sorted_by[column] = await page.eval_on_selector_all("#opps tbody tr", ROW_IDS)
    by_id = {o["id"]: o for o in done.json()["opportunities"]}
    symbols = [by_id[i]["symbol"] for i in sorted_by["symbol"]]
    returns = [by_id[i]["expected_return"] for i in sorted_by["expected_return"]]
    assert symbols == sorted(symbols) and returns == sorted(returns)  # ascending on 2nd click
    assert sorted_by["score"] == row_ids  # back to best score first
    assert source == "log"
    assert row_ids == [o["id"] for o in done.json()["opportunities"]]
    # momentum, rsi: one run; flaky: failed then completed; poison: three failed runs
    assert sorted(segments) == sorted(["completed"] * 3 + ["failed"] * 4)
    assert await page.text_content("#overall-pct") == "100%"


STORED = "() => localStorage.getItem('scanstream.token')"


async def signed_in_as(page: Any) -> str:
    await page.wait_for_selector("#whoami:not([hidden])")
    text: str = await page.text_content("#whoami b")
    return text


async def test_a_link_never_replaces_the_stored_token_without_asking(
    server: tuple[str, Fanout], page: Any
) -> None:
    """Signed in as alice, a `/#token=` link for mallory (in a new tab, then in the same
    tab) shows whose account it is and changes nothing until the user says so: "Stay"
    keeps alice, "Switch account" signs in as mallory."""
    base, _ = server
    alice, mallory = token("alice"), token("mallory")
    await page.goto(f"{base}/#token={alice}")  # nothing stored yet: the link signs in
    assert await signed_in_as(page) == "alice"
    assert await page.evaluate(STORED) == alice

    tab = await page.context.new_page()  # the link opened from a mail or a chat
    await tab.goto(f"{base}/#token={mallory}")
    await tab.wait_for_selector("#switch-gate:not([hidden])")
    assert "token=" not in tab.url
    assert await tab.is_hidden("#app")
    assert await tab.text_content("#switch-new") == "mallory"
    assert await tab.text_content("#switch-old") == "alice"
    assert await tab.evaluate(STORED) == alice  # asking changed nothing
    (REPO / "test-output").mkdir(exist_ok=True)
    await tab.screenshot(path=str(REPO / "test-output" / "dashboard-switch.png"))
    await tab.click("#switch-stay")
    assert await signed_in_as(tab) == "alice"
    assert await tab.evaluate(STORED) == alice
    await tab.close()

    await page.goto(f"{base}/#token={mallory}")  # the same tab: only the fragment changes
    await page.wait_for_selector("#switch-gate:not([hidden])")
    assert await page.evaluate(STORED) == alice
    await page.click("#switch-accept")
    assert await signed_in_as(page) == "mallory"
    assert await page.evaluate(STORED) == mallory
    assert "token=" not in page.url


def _forged(sub: str) -> str:
    """A token whose payload claims `sub`, with a signature that does not match."""
    payload = json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode()
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return token("mallory").split(".")[0] + "." + body + ".AAAA"


async def test_a_refused_link_token_is_not_used_and_its_text_stays_text(
    server: tuple[str, Fanout], page: Any
) -> None:
    """A link whose token the server refuses (forged, with markup for a name; or expired)
    asks nothing, keeps the stored token, says why, and runs none of the markup."""
    base, _ = server
    alice = token("alice")
    await page.goto(f"{base}/#token={alice}")
    assert await signed_in_as(page) == "alice"
    hostile = '<img src=x onerror="window.pwned=1">'
    expired, expires_at = issue(SECRET, "mallory", 1)
    await anyio.sleep(expires_at - time.time() + 0.05)
    for link, why in ((_forged(hostile), "invalid"), (expired, "expired")):
        tab = await page.context.new_page()
        await tab.goto(f"{base}/#token={link}")
        await tab.wait_for_function(
            "() => !document.getElementById('toast').hidden"
            " && document.getElementById('toast').textContent.includes('not used')"
        )
        assert why in (await tab.text_content("#toast") or "")
        assert await tab.is_hidden("#switch-gate")
        assert await signed_in_as(tab) == "alice"
        assert await tab.evaluate(STORED) == alice
        assert await tab.evaluate("() => window.pwned") is None
        assert await tab.locator("img[src='x']").count() == 0
        await tab.close()
