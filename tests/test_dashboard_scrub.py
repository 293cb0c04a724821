"""The dashboard's replay of a finished scan, in headless Chromium (Playwright).

A real scan (built-in strategies, and `flaky` for a failed attempt and its retry) runs on a
real server and worker. The page's scrubber is then moved with the range input, the step
buttons, the keyboard and the timeline, and at every position the status it shows (strategy
states, attempts, progress and finds, the counters, the ranked opportunities) must equal the
server's own fold (`scanstream.projection.fold_all`) of that many log entries; at the last
entry, it must equal what `/v1/scans/{id}` and `/results` say.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from scanstream.api.app import create_app
from scanstream.events import LogEntry, ts_ms
from scanstream.projection import fold_all
from scanstream.render import results_of, status_of
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.support.browser import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS
from tests.support.http import serve
from tests.support.sse import bearer, read_log, token, worker_running

pytestmark = BROWSER_MARKS
STRATEGIES = ["momentum", "breakout", "pairs_spread", "funding_carry", "flaky"]
PARAMS = {"pace_ms": 10}  # progress reports a few ms apart: a log of a hundred-odd entries
REPO = Path(__file__).resolve().parent.parent

# What the page shows, read from the DOM only.
SHOWN = """() => {
  const text = (id) => document.getElementById(id).textContent;
  const replay = document.getElementById('replay');
  return {
    pos: Number(replay.dataset.pos), total: Number(replay.dataset.total),
    event_id: replay.dataset.eventId,
    event_type: text('replay-type'),
    strategies: [...document.querySelectorAll('#strategies tbody tr')].map(r => [
      r.dataset.strategy, r.dataset.state, Number(r.dataset.attempts),
      Number(r.dataset.progress), Number(r.dataset.found)]),
    state_badges: [...document.querySelectorAll('#strategies tbody tr td:nth-child(2) .badge')]
      .map(b => b.textContent),
    opportunities: [...document.querySelectorAll('#opps tbody tr')].map(r => r.dataset.id),
    opp_count: text('opp-count'),
    scan_state: text('scan-state'),
    overall: text('overall-pct'),
    stat_strategies: text('stat-strategies'),
    stat_failed: text('stat-failed'),
    stat_opps: text('stat-opps'),
    stat_events: text('stat-events'),
    as_of: document.getElementById('scan-asof').hidden ? null : text('scan-asof'),
    markers: document.querySelectorAll('#timeline .track .now').length,
    marker_heads: document.querySelectorAll('#timeline .axis .now-head').length,
  };
}"""
# The page's fold (fold.js) of every prefix of the log it read, as status and results JSON.
EVERY_PREFIX = """() => {
  const c = window.scanstream.current, es = c.replay.entries, out = [];
  for (let n = 1; n <= es.length; n++) {
    const v = ScanFold.foldAll(c.id, es.slice(0, n));
    out.push([ScanFold.status(v), ScanFold.results(v)]);
  }
  return out;
}"""


def as_json(obj: Any) -> Any:
    return json.loads(msgspec.json.encode(obj))


def expected_at(scan_id: str, entries: list[LogEntry], n: int) -> dict[str, Any]:
    """What the page must show after the first `n` entries: the server's fold of them."""
    view = fold_all(scan_id, entries[:n])
    status, results = status_of(view), results_of(view)
    done = status.strategies_completed + status.strategies_failed
    return {
        "pos": n,
        "event_id": entries[n - 1].id,
        "event_type": entries[n - 1].type,
        "strategies": [
            [s.name, s.state, s.attempts, s.progress, s.opportunities] for s in status.strategies
        ],
        "state_badges": [s.state for s in status.strategies],
        "opportunities": [o.id for o in results.opportunities],
        "opp_count": str(status.opportunities_found),
        "scan_state": status.state,
        "overall": f"{math.floor(status.progress * 100 + 1e-9)}%",
        "stat_strategies": f"{done} / {status.strategies_total}",
        "stat_failed": str(status.strategies_failed),
        "stat_opps": str(status.opportunities_found),
        "stat_events": str(n),
    }


def assert_shows(shown: dict[str, Any], expected: dict[str, Any]) -> None:
    got = {k: shown[k] for k in expected}
    assert got == expected, f"at event {expected['pos']}"
    assert shown["markers"] == len(expected["strategies"]) and shown["marker_heads"] == 1


@pytest.fixture
def base(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def page() -> AsyncIterator[Any]:
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
        await browser.close()
        assert errors == [], f"the page raised: {errors}"


async def at(page: Any, n: int) -> dict[str, Any]:
    await page.wait_for_selector(f"#replay[data-pos='{n}']", state="attached")
    shown: dict[str, Any] = await page.evaluate(SHOWN)
    return shown


async def drag_to(page: Any, n: int) -> dict[str, Any]:
    """Move the range input as a drag does: set its value, fire `input`."""
    await page.eval_on_selector(
        "#replay-range",
        "(el, n) => { el.value = String(n);"
        " el.dispatchEvent(new Event('input', {bubbles: true})); }",
        n,
    )
    return await at(page, n)


async def test_scrubbing_a_finished_scan_shows_the_servers_fold_at_every_event(
    base: str, settings: Settings, store: EventStore, page: Any, tmp_path: Path
) -> None:
    async with (
        worker_running(settings, STRATEGIES, concurrency=4),
        httpx.AsyncClient(base_url=base, timeout=20.0) as api,
    ):
        created = await api.post(
            "/v1/scans", json={"strategies": STRATEGIES, "params": PARAMS}, headers=bearer()
        )
        scan_id = created.json()["scan_id"]
        done = await api.get(
            f"/v1/scans/{scan_id}/results", params={"wait": "30"}, headers=bearer()
        )
        assert done.json()["complete"], done.text

        status = (await api.get(f"/v1/scans/{scan_id}", headers=bearer())).json()
        results = (await api.get(f"/v1/scans/{scan_id}/results", headers=bearer())).json()
        log = await read_log(api, scan_id)
        entries = await store.read(scan_id)
        total = len(entries)
        assert total >= 40, [e.type for e in entries]
        assert [e["id"] for e in log] == [e.id for e in entries]
        # The scan has what a replay should show: a failed attempt, then its retry.
        flaky = status["strategies"][STRATEGIES.index("flaky")]
        assert status["state"] == "completed" and flaky["attempts"] == 2, status
        retry_failed = next(
            i
            for i, e in enumerate(entries)
            if e.type == "strategy.failed" and getattr(e.event, "strategy", "") == "flaky"
        )

        await page.goto(f"{base}/#token={token()}")
        await page.click(f"#scan-list li[data-scan='{scan_id}']")
        await page.wait_for_function(
            "() => window.scanstream.current?.results && window.scanstream.current.replay"
        )

        # Opened at the last event: exactly what /v1/scans/{id} and /results say.
        shown = await at(page, total)
        assert shown["total"] == total and shown["as_of"] is None
        assert shown["strategies"] == [
            [s["name"], s["state"], s["attempts"], s["progress"], s["opportunities"]]
            for s in status["strategies"]
        ]
        assert shown["opportunities"] == [o["id"] for o in results["opportunities"]]
        assert shown["opp_count"] == shown["stat_opps"] == str(status["opportunities_found"])
        assert shown["scan_state"] == status["state"] and shown["overall"] == "100%"
        assert_shows(shown, expected_at(scan_id, entries, total))

        # The range input, dragged to chosen and random positions.
        rng = random.Random(scan_id)
        chosen = [1, 2, retry_failed + 1, retry_failed + 2, total // 2, total - 1]
        chosen += rng.sample(range(1, total + 1), 6)
        for n in chosen:
            assert_shows(await drag_to(page, n), expected_at(scan_id, entries, n))
        # Right after flaky's first attempt failed, it waits for its retry.
        shown = await drag_to(page, retry_failed + 1)
        assert shown["strategies"][STRATEGIES.index("flaky")][1:3] == ["pending", 1]
        assert shown["as_of"] == f"as of event {retry_failed + 1} / {total}"
        assert shown["event_type"] == "strategy.failed"
        await page.wait_for_timeout(300)  # let the bars' width transitions settle
        shot = REPO / "test-output" / "dashboard-scrub.png"
        shot.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(shot), full_page=True)

        # The step buttons and the keyboard (from the page, not the range input).
        n = total // 3
        await drag_to(page, n)
        await page.click("#replay-next")
        n += 1
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        await page.click("#replay-prev")
        await page.click("#replay-prev")
        n -= 2
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        await page.click("#scan-id")  # focus leaves the buttons; arrows work page-wide
        await page.keyboard.press("ArrowLeft")
        n -= 1
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        await page.keyboard.press("Shift+ArrowRight")
        n += 10
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        await page.fill("#opp-filter", "x")  # typing in a field is not scrubbing
        await page.keyboard.press("ArrowLeft")
        await page.fill("#opp-filter", "")
        await page.wait_for_function(
            "() => !document.getElementById('opp-count').textContent.includes(' of ')"
        )
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        await page.click("#replay-first")
        assert_shows(await at(page, 1), expected_at(scan_id, entries, 1))

        # A click on the timeline jumps to the last event at (or before) the clicked time.
        track = await page.query_selector("#timeline .track")
        assert track is not None
        box = await track.bounding_box()
        times = [ts_ms(e.event.ts) if e.event else 0 for e in entries]
        t0 = ts_ms(status["created_at"])
        span = max(1000, ts_ms(status["finished_at"]) - t0)  # the page's time axis
        m = total // 2
        x = box["x"] + box["width"] * (times[m - 1] - t0) / span
        await page.mouse.click(x + 0.5, box["y"] + box["height"] / 2)
        await page.wait_for_function("() => document.getElementById('replay').dataset.pos !== '1'")
        n = int(await page.get_attribute("#replay", "data-pos") or 0)
        px = span / box["width"]  # ms per pixel
        assert n > 1 and times[n - 1] <= times[m - 1] + 2 * px
        assert all(t > times[m - 1] - 2 * px for t in times[n:]), (m, n)
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))

        # The event log panel follows the replay, and a click on an entry moves it there.
        await page.click("#log-panel summary")
        n = total // 2
        await page.click(f"#event-log li[data-id='{entries[n - 1].id}']")
        assert_shows(await at(page, n), expected_at(scan_id, entries, n))
        assert await page.get_attribute("#event-log li.current", "data-id") == entries[n - 1].id
        assert len(await page.query_selector_all("#event-log li.later")) == total - n
        await page.screenshot(path=str(tmp_path / "dashboard-scrub-log.png"), full_page=True)

        # fold.js on every prefix of the log equals the server's fold: status and results.
        every = await page.evaluate(EVERY_PREFIX)
        assert len(every) == total
        for n, (page_status, page_results) in enumerate(every, 1):
            view = fold_all(scan_id, entries[:n])
            assert page_status == as_json(status_of(view)), f"status after {n} entries"
            assert page_results == as_json(results_of(view)), f"results after {n} entries"

        # Back to the end: the server's answer again, and no "as of" left.
        await page.click("#replay-last")
        shown = await at(page, total)
        assert shown["as_of"] is None
        assert shown["strategies"] == [
            [s["name"], s["state"], s["attempts"], s["progress"], s["opportunities"]]
            for s in status["strategies"]
        ]
        assert shown["opportunities"] == [o["id"] for o in results["opportunities"]]
        assert as_json(status_of(fold_all(scan_id, entries))) == status
