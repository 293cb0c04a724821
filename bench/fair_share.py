"""Fair share (issue 10): how long one user's scan waits while another user floods the
service, with the shipped fair-share lanes beside first in, first out (the order before
issue 10), in the same run, on the same Redis, with the same worker.

One worker process (`--concurrency 8`, shipped thread isolation) and one strategy,
`paced` (bench/paced_strategies.py), that takes PAUSE_S. Alice queues FLOOD scans of it
before the worker starts (FLOOD x PAUSE_S / 8 seconds of work); once the worker has taken
her first job, bob starts BOB_SCANS one-strategy scans, one every BOB_EVERY_S, while her
backlog drains. Bob's user name is chosen so that his jobs go to alice's partition: the
case where first in, first out puts him behind all of her work (on another partition he
would be read beside her either way).

- fair: jobs queued as the API queues them (`JobQueue.enqueue_calls`: the user's lane,
  moved to the job stream by lua/job_lanes.lua, users taking turns);
- fifo: the same jobs XADDed straight onto the partition's job stream as they arrive.

Bob's wait is from his scan.requested to his strategy.started, both entry ids, so both
stamped by Redis's clock. Alice's jobs/s (her first strategy.started to her last
terminal event) shows what fairness costs her throughput.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import Bench, Row, entry_ms, percentile, running, say, verdict
from scanstream.storage.keys import DEFAULT_PARTITIONS, Keys

NAME = "fair_share"
CONCURRENCY = 8
PARTITIONS = DEFAULT_PARTITIONS
STRATEGY = "paced"
ALICE = "alice"
TIMEOUT_S = 180.0
TARGET_P99_S = 5.0  # issue 10: bob's scan done within 5 s while alice floods
MODES = ("fair", "fifo")


def bob_beside(keys: Keys, alice: str) -> str:
    """A user name whose jobs share alice's partition."""
    target = keys.jobs_of(alice).index
    return next(f"bob{i}" for i in range(10_000) if keys.jobs_of(f"bob{i}").index == target)


class Scans:
    """Scans of `paced` made as the API makes them, their jobs queued per mode."""

    def __init__(self, url: str, prefix: str, mode: str, pause_s: float) -> None:
        from scanstream.storage import connection
        from scanstream.storage.events import EventStore
        from scanstream.storage.jobs import JobQueue

        self.redis = connection.client(url, max_connections=64)
        self.keys = Keys(prefix, PARTITIONS)
        self.store = EventStore(self.redis, self.keys, retention_s=3600)
        self.queue = JobQueue(self.redis, self.keys)
        self.mode, self.params = mode, {"pause_s": pause_s}

    async def create(self, user: str, count: int) -> list[str]:
        from scanstream import events as ev
        from scanstream.ids import new_scan_id
        from scanstream.storage.jobs import job_fields
        from scanstream.storage.scripts import Call, pipelined

        ids = [new_scan_id() for _ in range(count)]
        requested = ev.stamp(
            ev.ScanRequested, user_id=user, strategies=[STRATEGY], params=self.params
        )
        await asyncio.gather(*(self.store.create_scan(i, requested) for i in ids))
        if self.mode == "fair":
            calls: list[Call] = []
            for scan_id in ids:
                calls += self.queue.enqueue_calls(scan_id, user, [STRATEGY])
            await pipelined(self.redis, calls)
        else:  # the order before lanes: one stream, first in, first out
            pipe = self.redis.pipeline(transaction=False)
            for scan_id in ids:
                pipe.xadd(self.keys.jobs_of(user).jobs, job_fields(scan_id, STRATEGY))
            await pipe.execute()
        return ids

    async def taken(self, user: str) -> bool:
        """Has a worker taken one of `user`'s partition's jobs yet?"""
        from scanstream.storage.keys import JOB_GROUP

        groups = await self.redis.xinfo_groups(self.keys.jobs_of(user).jobs)
        return any(
            g["name"] in (JOB_GROUP, JOB_GROUP.encode()) and g["last-delivered-id"] != b"0-0"
            for g in groups
        )

    async def marks(self, scan_id: str) -> dict[str, int]:
        """Entry ms of the scan's requested, first started and terminal events (if any)."""
        out: dict[str, int] = {}
        for entry in await self.store.read(scan_id):
            kind = entry.type
            if kind == "scan.requested":
                out.setdefault("requested", entry_ms(entry.id))
            elif kind == "strategy.started":
                out.setdefault("started", entry_ms(entry.id))
            elif kind.startswith("scan.") and kind != "scan.requested":
                out["ended"] = entry_ms(entry.id)
                out["completed"] = int(kind == "scan.completed")
        return out

    async def wait_ended(self, ids: list[str], timeout_s: float) -> list[dict[str, int]]:
        deadline = time.monotonic() + timeout_s
        while True:
            marks = await asyncio.gather(*(self.marks(i) for i in ids))
            if all("ended" in m for m in marks):
                return list(marks)
            if time.monotonic() > deadline:
                left = sum("ended" not in m for m in marks)
                raise TimeoutError(f"{left} of {len(ids)} scans had not ended in {timeout_s}s")
            await asyncio.sleep(0.25)


def run_mode(b: Bench, mode: str, flood: int, bobs: int, every_s: float, pause_s: float) -> Any:
    b.flush()
    prefix = f"bench10{mode}"
    worker = b.worker(
        prefix,
        CONCURRENCY,
        name=f"worker-{mode}",
        SCANSTREAM_STRATEGIES="bench.paced_strategies",
        SCANSTREAM_JOB_PARTITIONS=str(PARTITIONS),
    )

    async def scenario() -> dict[str, Any]:
        scans = Scans(b.redis_url, prefix, mode, pause_s)
        try:
            await scans.queue.ensure_group()
            bob = bob_beside(scans.keys, ALICE)
            alices = await scans.create(ALICE, flood)
            with running(worker):
                deadline = time.monotonic() + 30
                while not await scans.taken(ALICE):
                    worker.check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError("the worker took no job within 30 s")
                    await asyncio.sleep(0.01)
                bob_ids: list[str] = []
                for _ in range(bobs):
                    bob_ids += await scans.create(bob, 1)
                    await asyncio.sleep(every_s)
                bob_marks = await scans.wait_ended(bob_ids, TIMEOUT_S)
                alice_marks = await scans.wait_ended(alices, TIMEOUT_S)
        finally:
            await scans.redis.aclose()
        return summarise(mode, flood, bob_marks, alice_marks)

    return asyncio.run(scenario())


def summarise(
    mode: str, flood: int, bob: list[dict[str, int]], alice: list[dict[str, int]]
) -> dict[str, Any]:
    waits = [(m["started"] - m["requested"]) / 1000 for m in bob]
    scan_s = [(m["ended"] - m["requested"]) / 1000 for m in bob]
    span_s = (max(m["ended"] for m in alice) - min(m["started"] for m in alice)) / 1000
    out = {
        "mode": mode,
        "bob_scans": len(bob),
        "bob_wait_p50_s": round(percentile(waits, 50), 3),
        "bob_wait_p99_s": round(percentile(waits, 99), 3),
        "bob_wait_max_s": round(max(waits), 3),
        "bob_scan_p99_s": round(percentile(scan_s, 99), 3),
        "alice_jobs_per_s": round(flood / span_s, 1) if span_s > 0 else None,
        "completed": sum(m["completed"] for m in bob + alice),
        "scans": len(bob) + len(alice),
    }
    say(
        f"  {mode}: bob's wait p50 {out['bob_wait_p50_s']} s, p99 {out['bob_wait_p99_s']} s, "
        f"scan p99 {out['bob_scan_p99_s']} s; alice {out['alice_jobs_per_s']} jobs/s; "
        f"{out['completed']}/{out['scans']} completed"
    )
    return out


def run(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    flood, bobs, every_s, pause_s = (120, 8, 0.3, 0.1) if b.quick else (400, 20, 0.3, 0.2)
    say(
        f"  one worker (--concurrency {CONCURRENCY}); alice floods {flood} scans of a "
        f"{pause_s} s strategy (~{flood * pause_s / CONCURRENCY:.0f} s of work), then bob "
        f"starts {bobs} one-strategy scans, one every {every_s} s, on her partition"
    )
    res = {mode: run_mode(b, mode, flood, bobs, every_s, pause_s) for mode in MODES}
    fair, fifo = res["fair"], res["fifo"]
    whole = all(r["completed"] == r["scans"] for r in res.values())

    def times(key: str) -> str:
        return f"{fifo[key] / fair[key]:.1f}x shorter" if fair[key] else ""

    figures = {
        "flood_scans": flood,
        "pause_s": pause_s,
        "concurrency": CONCURRENCY,
        **res,
    }
    rows = [
        Row(
            NAME,
            f"bob's wait p50, alice flooding {flood} scans (fair vs FIFO)",
            f"{fair['bob_wait_p50_s']} s",
            f"{fifo['bob_wait_p50_s']} s",
            times("bob_wait_p50_s"),
        ),
        Row(
            NAME,
            f"bob's wait p99 ({bobs} scans; FIFO = the order before lanes)",
            f"{fair['bob_wait_p99_s']} s",
            f"{fifo['bob_wait_p99_s']} s",
            times("bob_wait_p99_s"),
        ),
        Row(
            NAME,
            "bob's whole scan p99 while alice floods",
            f"{fair['bob_scan_p99_s']} s",
            f"{fifo['bob_scan_p99_s']} s",
            times("bob_scan_p99_s"),
            f"< {TARGET_P99_S:g} s",
            verdict(fair["bob_scan_p99_s"] < TARGET_P99_S and whole),
        ),
        Row(
            NAME,
            "alice's jobs/s through the flood (what fairness costs her)",
            f"{fair['alice_jobs_per_s']}",
            f"{fifo['alice_jobs_per_s']}",
            f"{fair['alice_jobs_per_s'] / fifo['alice_jobs_per_s']:.2f}",
        ),
    ]
    return figures, rows
