"""Entries written into a scan's stream by hand, while real workers run it: every fold
skips and counts them, the scan still completes, and the API still serves it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scanstream.api.auth import make_token
from scanstream.render import results_of, status_of
from scanstream.settings import Settings
from scanstream.storage.events import EventStore
from tests.conftest import SECRET
from tests.support.faults import (
    assert_log_is_sound,
    consumer_name,
    fault_settings,
    started_events,
    worker,
)
from tests.support.procs import api_proc, running
from tests.support.scans import (
    start_scan,
    wait_for,
    wait_until_ended,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HOSTILE: list[dict[bytes, bytes]] = [
    {b"type": b"strategy.progress", b"data": b"{not json"},
    {b"type": b"strategy.exploded", b"data": b"{}"},
    {b"type": b"strategy.started", b"data": b'{"event_id":"m1","ts":"t","v":1}'},
    {b"foo": b"bar"},
    {
        b"type": b"strategy.progress",
        b"data": b'{"event_id":"f1","ts":"t","v":99,"strategy":"finder","attempt":1,"progress":1}',
    },
    {
        b"type": b"opportunity.found",
        b"data": b'{"event_id":"h1","ts":"t","v":1,"pad":"' + b"x" * 300_000 + b'"}',
    },
    {b"type": b"scan.completed", b"data": b"looks terminal, is not"},
    {b"type": b"\xff\xfe", b"data": b"{}"},
]


async def test_hostile_entries_are_skipped_counted_and_reported(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    """Given a running scan, when invalid JSON, an unknown type, missing fields, a future
    `v`, a huge payload, a fake terminal event and a non-UTF-8 type are XADDed to its
    stream, the scan still completes, and status (from the fold and from the API) reports
    every one of them as a warning."""
    s = fault_settings(settings)
    with running(worker(s, tmp_path, "a"), api_proc(s, tmp_path)) as (w, api):
        await consumer_name(w)
        scan_id = await start_scan(store, ["steady_a", "finder"], {"slow_s": 1.5})
        await wait_for(lambda: _started(store, scan_id), 10, "the strategies to start")
        for fields in HOSTILE:
            await store.redis.xadd(store.keys.events(scan_id), fields)  # type: ignore[arg-type]
        view = await wait_until_ended(store, scan_id, timeout_s=20)
        headers = {"Authorization": f"Bearer {make_token(SECRET, 'alice')}"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
            status = await http.get(f"/v1/scans/{scan_id}")
            results = await http.get(f"/v1/scans/{scan_id}/results")
            log = await http.get(f"/v1/scans/{scan_id}/log", params={"limit": 1000})
    assert view.state == "completed"
    assert view.warnings_count == len(HOSTILE)
    problems = " | ".join(w.problem for w in view.warnings)
    for phrase in (
        "not valid JSON",
        "unknown event type",
        "newer than",
        "over the limit",
        "lacks the type or data",
        "not UTF-8",
    ):
        assert phrase in problems, phrase
    body = status_of(view)
    assert body.state == "completed" and body.opportunities_found == 23
    assert len(results_of(view).opportunities) == 23
    entries = await store.read(scan_id)
    readable = [e for e in entries if e.event is not None]
    assert_log_is_sound(readable)
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "completed"
    assert status.json()["warnings_count"] == len(HOSTILE)
    assert results.status_code == 200 and len(results.json()["opportunities"]) == 23
    assert log.status_code == 200
    assert sum(1 for e in log.json()["events"] if "problem" in e) == len(HOSTILE)


async def _started(store: EventStore, scan_id: str) -> bool:
    return len(started_events(await store.read(scan_id))) >= 2
