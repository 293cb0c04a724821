"""The bug scanstream exists to end: status `not_found` depending on the worker answering.

Three API processes, two worker processes, one Redis (and again on a Redis Cluster of
3 masters and 3 replicas); every scan is polled round-robin
across the API processes every ~20 ms for its whole life.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest

from scanstream.api.auth import make_token
from scanstream.projection_cache import entry_key
from scanstream.settings import Settings
from tests.support.backends import on_both_backends
from tests.support.procs import api_proc, running, worker_proc

STATE_ORDER = {"queued": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}
SCANS = 6
POLL_INTERVAL_S = 0.02


async def _poll_until_done(
    client: httpx.AsyncClient,
    apis: list[str],
    scan_id: str,
    headers: dict[str, str],
    answers: list[int],
) -> None:
    previous: dict | None = None
    turn = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = await client.get(f"{apis[turn % len(apis)]}/v1/scans/{scan_id}", headers=headers)
        turn += 1
        answers.append(response.status_code)
        assert response.status_code == 200, (
            f"poll {turn} on {apis[(turn - 1) % 3]}: {response.text}"
        )
        status = response.json()
        if previous is not None:
            assert STATE_ORDER[status["state"]] >= STATE_ORDER[previous["state"]], "state went back"
            assert status["strategies_completed"] >= previous["strategies_completed"]
            assert status["opportunities_found"] >= previous["opportunities_found"]
            assert entry_key(status["last_event_id"]) >= entry_key(previous["last_event_id"])
        previous = status
        if status["state"] in ("completed", "failed", "cancelled"):
            return
        await anyio.sleep(POLL_INTERVAL_S)
    raise AssertionError(f"{scan_id} did not finish in time")


@pytest.mark.slow
@on_both_backends
def test_status_is_200_on_every_api_process_for_the_whole_scan(
    settings: Settings, tmp_path: Path
) -> None:
    """Concurrent 14-strategy scans polled round-robin over 3 API processes: only 200s,
    no state going backwards, identical results everywhere at the end."""
    settings = settings.with_(strategy_modules=())
    procs = [api_proc(settings, tmp_path) for _ in range(3)]
    procs += [worker_proc(settings, tmp_path, concurrency=8, name=f"w{i}") for i in range(2)]
    headers = {"Authorization": f"Bearer {make_token(settings.secret or '', 'alice')}"}

    async def scenario(apis: list[str]) -> tuple[int, list[str]]:
        answers: list[int] = []
        async with httpx.AsyncClient(timeout=10) as client:
            strategies = (await client.get(f"{apis[0]}/v1/strategies", headers=headers)).json()
            assert len(strategies["strategies"]) == 14
            scan_ids = []
            for i in range(SCANS):
                created = await client.post(
                    f"{apis[i % 3]}/v1/scans",
                    headers=headers,
                    json={"params": {"pace_ms": 80, "seed": i}},
                )
                assert created.status_code == 202, created.text
                scan_ids.append(created.json()["scan_id"])
            async with anyio.create_task_group() as tg:
                for scan_id in scan_ids:
                    tg.start_soon(_poll_until_done, client, apis, scan_id, headers, answers)
            for scan_id in scan_ids:
                bodies = [
                    (await client.get(f"{api}/v1/scans/{scan_id}/results", headers=headers)).json()
                    for api in apis
                ]
                statuses = [
                    (await client.get(f"{api}/v1/scans/{scan_id}", headers=headers)).json()
                    for api in apis
                ]
                assert bodies[0]["complete"] and bodies[0]["state"] == "completed"
                assert bodies[0] == bodies[1] == bodies[2]
                assert statuses[0] == statuses[1] == statuses[2]
                assert statuses[0]["strategies_total"] == 14
                assert statuses[0]["opportunities_found"] == len(bodies[0]["opportunities"])
        return len(answers), scan_ids

    with running(*procs):
        polls, scan_ids = anyio.run(scenario, [p.url for p in procs[:3]])
    print(f"\n{polls} status polls across 3 API processes for {len(scan_ids)} scans: all 200")
    assert polls > SCANS * 20
