"""A graceful stop of a real `scanstream api` process (SIGTERM, or Ctrl-C's SIGINT) while SSE
streams follow a running scan and long-polls wait on it: they all end at once, so the
process exits promptly, with nothing alarming in its log."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.support import api_events as scans
from tests.support.api_events import auth
from tests.support.procs import api_proc, running
from tests.support.sse import create_scan, wait_for_metric

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STREAMS = WAITS = 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_streams_and_long_polls_end_at_once_on_a_graceful_stop(
    settings: Settings, store: EventStore, tmp_path: Path, signum: int
) -> None:
    """On SIGTERM / SIGINT every open SSE stream ends cleanly (a comment saying why, then
    the end of the response) and every long-poll answers 200 with the results so far,
    within 1 s; the process exits within 2 s, with no traceback or error in its log."""
    proc = api_proc(settings, tmp_path)
    ends: dict[str, float] = {}
    streams: list[bytes] = []
    polls: list[httpx.Response] = []
    with running(proc):
        assert proc.process is not None
        async with httpx.AsyncClient(base_url=proc.url, headers=auth(), timeout=30.0) as api:
            scan_id = await create_scan(api, ["slow"])
            await scans.start(store, scan_id, "slow")

            async def follow(n: int) -> None:
                async with api.stream("GET", f"/v1/scans/{scan_id}/events") as response:
                    assert response.status_code == 200
                    streams.append(b"".join([chunk async for chunk in response.aiter_bytes()]))
                ends[f"stream {n}"] = time.monotonic()

            async def wait(n: int) -> None:
                url = f"/v1/scans/{scan_id}/results"
                polls.append(await api.get(url, params={"wait": 30}))
                ends[f"long-poll {n}"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                for n in range(STREAMS):
                    tg.start_soon(follow, n)
                for n in range(WAITS):
                    tg.start_soon(wait, n)
                await wait_for_metric(api, "scanstream_sse_following", STREAMS)
                await wait_for_metric(api, "scanstream_results_waiting", WAITS)
                stopped = time.monotonic()
                proc.signal(signum)
            exited = await anyio.to_thread.run_sync(proc.process.wait, 10.0)
            exit_s = time.monotonic() - stopped
    log = proc.log_path.read_text()
    assert len(ends) == STREAMS + WAITS
    slowest = max(ends.values()) - stopped
    assert slowest < 1.0, f"the last one ended {slowest:.2f}s after the signal"
    assert exit_s < 2.0, f"the process took {exit_s:.2f}s to exit (code {exited})"
    for body in streams:
        assert body.startswith(b"retry: ")
        last = body.rstrip(b"\n").splitlines()[-1]
        assert last.startswith(b": closed: the server is shutting down"), body[-200:]
    for response in polls:
        assert response.status_code == 200, response.text
        assert response.json()["complete"] is False
    for alarming in ("Traceback", "ERROR", "Cancel ", "Exception"):
        assert alarming not in log, log
