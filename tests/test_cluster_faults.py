"""A Redis Cluster losing a master, and a slot moving, while scans run.

Each test starts a cluster of its own (3 masters, 3 replicas, `cluster-node-timeout`
1 s), since it breaks it; the workers and the API are real processes on cluster settings.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
from redis.crc import key_slot

from scanstream.api.auth import make_token
from scanstream.errors import StoreUnavailable
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from tests.conftest import SECRET
from tests.support.cluster import LocalCluster
from tests.support.procs import api_proc, running, worker_proc
from tests.support.scans import start_scan

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TERMINAL = {"scan.completed", "scan.failed", "scan.cancelled"}


def cluster_settings(cluster: LocalCluster, **changes: object) -> Settings:
    return Settings(
        redis_url=cluster.seed_url,
        redis_cluster=True,
        secret=SECRET,
        prefix="t" + uuid.uuid4().hex[:12],
        strategy_modules=("tests.support.strategies",),
        claim_idle_ms=1_500,
        heartbeat_ms=300,
        retry_backoff_s=0.05,
        retention_s=3600,
    ).with_(**changes)


async def raw_log(storage: Storage, scan_id: str) -> list[tuple[str, dict[str, object]]]:
    """(type, data) of every entry of the scan's stream, as stored."""
    entries = await storage.events.read(scan_id)
    return [(e.type, orjson.loads(e.data)) for e in entries]


async def until_readable(storage: Storage, scan_ids: list[str], timeout_s: float) -> dict:
    """Each scan's raw log once every scan has ended (reads retried through the failover)."""
    deadline = time.monotonic() + timeout_s
    logs: dict[str, list[tuple[str, dict[str, object]]]] = {}
    while time.monotonic() < deadline:
        try:
            for scan_id in scan_ids:
                if scan_id not in logs or not any(t in TERMINAL for t, _ in logs[scan_id]):
                    logs[scan_id] = await raw_log(storage, scan_id)
        except StoreUnavailable:
            await anyio.sleep(0.2)
            continue
        if all(any(t in TERMINAL for t, _ in log) for log in logs.values()):
            return logs
        await anyio.sleep(0.2)
    unfinished = [s for s, log in logs.items() if not any(t in TERMINAL for t, _ in log)]
    raise AssertionError(f"{len(unfinished)} scans had not ended after {timeout_s}s")


def assert_whole_and_once(logs: dict, finds_per_scan: int) -> None:
    for scan_id, log in logs.items():
        terminals = [t for t, _ in log if t in TERMINAL]
        assert terminals == ["scan.completed"], (scan_id, terminals)
        event_ids = Counter(str(data["event_id"]) for _, data in log)
        assert max(event_ids.values()) == 1, f"{scan_id}: an entry written twice"
        found = [data["opportunity"]["id"] for t, data in log if t == "opportunity.found"]  # type: ignore[index]
        assert len(set(found)) == finds_per_scan, (scan_id, found)


@pytest.mark.parametrize("durable_replicas", [0, 1], ids=["async-replication", "wait-1"])
def test_a_master_killed_mid_load_loses_nothing_and_doubles_nothing(
    tmp_path: Path, durable_replicas: int
) -> None:
    """40 scans, 2 workers; the master holding most scans is SIGKILLed mid-load. Every
    scan ends with exactly one terminal event, every finding once, within 60 s."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        settings = cluster_settings(cluster, durable_replicas=durable_replicas)
        workers = [worker_proc(settings, tmp_path, concurrency=32, name=f"w{i}") for i in range(2)]

        async def scenario() -> tuple[dict, float, int]:
            storage = Storage.connect(settings)
            try:
                scan_ids = [
                    await start_scan(
                        storage.events, ["slow", "finder", "noop"], {"slow_s": 3, "finds": 2}
                    )
                    for _ in range(40)
                ]
                owners = Counter(
                    cluster.master_for_key(storage.keys.events(s)).port for s in scan_ids
                )
                victim_port, held = owners.most_common(1)[0]
                await anyio.sleep(1.5)  # mid-load: the slow strategies are half-way
                victim = next(m for m in cluster.masters() if m.port == victim_port)
                cluster.kill(victim)
                killed_at = time.monotonic()
                logs = await until_readable(storage, scan_ids, timeout_s=60)
                return logs, time.monotonic() - killed_at, held
            finally:
                await storage.aclose()

        with running(*workers):
            logs, took, held = anyio.run(scenario)
    print(f"\nkilled the master of {held}/40 scans; all ended {took:.1f}s after the kill")
    assert_whole_and_once(logs, finds_per_scan=2 + 2)


def test_a_running_scans_slot_moved_mid_scan_is_no_500_and_no_loss(tmp_path: Path) -> None:
    """A scan's slot is moved to another master while the scan runs and a client polls
    status, results and the log every 20 ms: no answer is a 500 (a redirect the client
    could not follow in time is a 503 to retry), and the log is whole."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        settings = cluster_settings(cluster)
        api = api_proc(settings, tmp_path)
        worker = worker_proc(settings, tmp_path, concurrency=8)
        headers = {"Authorization": f"Bearer {make_token(SECRET, 'alice')}"}

        async def scenario(base: str) -> tuple[Counter[int], dict, int]:
            answers: Counter[int] = Counter()
            storage = Storage.connect(settings)
            try:
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
                    created = await http.post(
                        "/v1/scans",
                        json={"strategies": ["slow", "finder"], "params": {"slow_s": 4}},
                    )
                    assert created.status_code == 202, created.text
                    scan_id = created.json()["scan_id"]
                    slot = key_slot(storage.keys.events(scan_id).encode())
                    owner = cluster.master_for_slot(slot)
                    target = next(m for m in cluster.masters() if m.port != owner.port)

                    async def poll() -> None:
                        while True:
                            for path in ("", "/results", "/log"):
                                r = await http.get(f"/v1/scans/{scan_id}{path}")
                                answers[r.status_code] += 1
                            if (
                                r.status_code == 200
                                and (await http.get(f"/v1/scans/{scan_id}")).json()["finished_at"]
                            ):
                                return
                            await anyio.sleep(0.02)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(poll)
                        await anyio.sleep(1.0)
                        # In batches of one key with pauses: traffic meets ASK redirects.
                        moved = await anyio.to_thread.run_sync(
                            lambda: cluster.migrate_slot(slot, target, batch=1, pause_s=0.2)
                        )
                    assert cluster.master_for_slot(slot).port == target.port
                    logs = await until_readable(storage, [scan_id], timeout_s=30)
                    return answers, logs, moved
            finally:
                await storage.aclose()

        with running(api, worker):
            answers, logs, moved = anyio.run(scenario, api.url)
    print(f"\nmoved {moved} keys of the scan's slot mid-scan; answers: {dict(answers)}")
    assert moved >= 3  # the stream, the fence and the write tokens
    assert set(answers) <= {200, 503} and answers[200] > 10 * answers[503], answers
    assert_whole_and_once(logs, finds_per_scan=2 + 3)
