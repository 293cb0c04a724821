"""`scanstream scan watch`: live bars from the SSE stream, reconnecting, then the results."""

from __future__ import annotations

import io
from collections.abc import Iterator

import anyio
import httpx
import pytest
from rich.console import Console

from scanstream.api.app import create_app
from scanstream.client import ApiClient
from scanstream.live.fanout import Fanout
from scanstream.settings import Settings
from scanstream.terminal import Feed, watch
from tests.support.http import serve
from tests.support.sse import create_scan, read_log, token, wait_for_metric, worker_running

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, Fanout]]:
    app = create_app(settings.with_(sse_heartbeat_s=0.5))
    with serve(app) as base:
        yield base, app.state.live


async def test_watch_draws_the_scan_live_and_ends_with_the_results(
    server: tuple[str, Fanout], settings: Settings
) -> None:
    """`watch` follows a running scan to its end, prints the results and exits 0."""
    base, _ = server
    out = io.StringIO()
    console = Console(file=out, width=150, force_terminal=True, color_system=None)
    async with worker_running(settings), httpx.AsyncClient(base_url=base) as api:
        scan_id = await create_scan(api, ["slow", "finder"], {"slow_s": 1.0, "finds": 4})
        client = ApiClient(base, token())
        try:
            code = await anyio.to_thread.run_sync(watch, client, scan_id, console)
        finally:
            client.http.close()
        results = (
            await api.get(
                f"/v1/scans/{scan_id}/results", headers={"Authorization": f"Bearer {token()}"}
            )
        ).json()
    text = out.getvalue()
    assert code == 0
    assert "slow" in text and "finder" in text and "100%" in text
    assert f"completed: {len(results['opportunities'])} opportunities" in text


async def test_the_feed_reconnects_after_the_server_closes_it_and_misses_nothing(
    server: tuple[str, Fanout], settings: Settings
) -> None:
    """The watch's feed survives two server-side drops and gets the log exactly once."""
    base, live = server
    async with worker_running(settings), httpx.AsyncClient(base_url=base) as api:
        scan_id = await create_scan(api, ["slow"], {"slow_s": 1.5})
        feed = Feed(ApiClient(base, token()), scan_id).start()
        for _ in range(2):
            await wait_for_metric(api, "scanstream_sse_following", 1, timeout_s=10)
            await anyio.sleep(0.3)
            assert live.loop is not None
            live.loop.call_soon_threadsafe(live.drop_all)
            await wait_for_metric(api, "scanstream_sse_following", 0)
        await anyio.to_thread.run_sync(feed.done.wait, 20.0)
        log = [e["id"] for e in await read_log(api, scan_id)]
    assert feed.error is None and feed.reconnects >= 2
    received = [feed.entries.get_nowait().id for _ in range(feed.entries.qsize())]
    assert received == log
