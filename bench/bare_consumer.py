"""Baseline consumers: the least a Redis Streams job consumer can do, for the ratios.

    python -m bench.bare_consumer --mode chain|drain|protocol --redis-url URL
                                  --jobs KEY [KEY ...] --group G [--partitions N]

Every job stream named (`--jobs`: one, or each job partition's) is read by ONE XREADGROUP
naming them all, COUNT 100 in all (split evenly between the streams), and a batch is
acknowledged with one XACK per stream, all in one round trip: a floor that pays nothing
per partition but the bytes.

- `drain`: read a batch, then acknowledge it; writes nothing. The floor of "take a job
  and acknowledge it" through redis-py (worker throughput baseline).
- `chain`: each job names a scan's events stream (field `events`); the consumer appends
  two events to it (started, completed: two round trips, as a worker's fenced start and
  finish are), the batch's jobs concurrently, then one XACK for the batch (POST to
  terminal-event latency baseline).
- `protocol`: scanstream jobs (`scan_id`, `strategy`, `user`) through scanstream's own
  queue and fenced writes: each round trip first moves waiting jobs from the users' lanes
  to every partition's stream (lua/job_lanes.lua `dispatch`, `JobQueue.lanes_call`, as
  many as the read takes), then the one XREADGROUP; `EventStore.start_strategy` then
  `finish_strategy` with a `strategy.completed` (the same Lua scripts and round trips as
  the worker, the terminal decision included), the batch's jobs concurrently; the batch
  acknowledged through the lanes (`ack`: XACK, the users' running counts, the next
  dispatch), one call per partition, one round trip. No task per job, no timeouts, no
  heartbeats, logs or metrics: the floor of the worker's protocol as it is today. Its
  keys are those of `--prefix` with `--partitions` job partitions (as the jobs' writer
  had: a scan that ends leaves its partition's running set).

Same redis-py client settings as scanstream (`scanstream.storage.connection.client`), on uvloop
like the worker, so only the work per job differs. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.settings import Settings
from scanstream.storage import connection
from scanstream.storage.events import EventStore
from scanstream.storage.jobs import JobQueue
from scanstream.storage.keys import DEFAULT_PARTITIONS, Keys
from scanstream.storage.scripts import Call, pipelined

READ_COUNT = 100
BLOCK_MS = 1000


async def _chain_job(r: Redis, fields: dict[bytes, bytes]) -> None:
    events = fields[b"events"]
    strategy = fields[b"strategy"].decode()
    await r.xadd(
        events,
        {"type": "strategy.started", "data": json.dumps({"strategy": strategy, "attempt": 1})},
    )
    await r.xadd(
        events,
        {
            "type": "strategy.completed",
            "data": json.dumps({"strategy": strategy, "attempt": 1, "ts": time.time()}),
        },
    )


async def _protocol_job(store: EventStore, name: str, fields: dict[bytes, bytes]) -> None:
    scan_id, strategy = fields[b"scan_id"].decode(), fields[b"strategy"].decode()
    started = await store.start_strategy(scan_id, strategy, name)
    if started.ok:
        done = ev.stamp(
            ev.StrategyCompleted,
            strategy=strategy,
            attempt=started.attempt,
            opportunities=0,
            duration_ms=0,
        )
        await store.finish_strategy(scan_id, strategy, started.attempt, [done])


async def consume(
    url: str, mode: str, jobs: list[str], group: str, prefix: str, partitions: int
) -> None:
    hot = connection.client(url, max_connections=2 * READ_COUNT + 16)
    blocking = connection.client(url, max_connections=2)
    keys = Keys(prefix, partitions)
    store = EventStore(hot, keys, retention_s=3600)
    name = f"bare-{os.getpid()}"
    per_stream = -(-READ_COUNT // len(jobs))
    # protocol mode: the job streams' partitions, for their lanes (the shipped per-user cap)
    queue = JobQueue(blocking, keys, max_running=Settings.user_max_running_jobs)
    lanes = {p.jobs.encode(): p for p in keys.partitions if p.jobs in jobs}
    read: Call = (
        None,
        ("XREADGROUP", "GROUP", group, name, "COUNT", per_stream, "BLOCK", BLOCK_MS, "STREAMS")
        + tuple(jobs)
        + (">",) * len(jobs),
    )
    while True:
        if mode == "protocol":
            dispatch = [queue.lanes_call(p, "dispatch", depth=per_stream) for p in lanes.values()]
            reply: Any = (await pipelined(blocking, [*dispatch, read]))[-1]
        else:
            reply = await blocking.xreadgroup(
                group, name, dict.fromkeys(jobs, ">"), count=per_stream, block=BLOCK_MS
            )
        batches = [
            (stream, entries)
            for stream, entries in (reply.items() if isinstance(reply, dict) else reply or [])
            if entries
        ]
        every = [fields for _stream, entries in batches for _id, fields in entries]
        if mode == "chain":
            await asyncio.gather(*(_chain_job(hot, fields) for fields in every))
        elif mode == "protocol":
            await asyncio.gather(*(_protocol_job(store, name, fields) for fields in every))
        if batches and mode == "protocol":
            acks = [
                queue.lanes_call(
                    lanes[stream],
                    "ack",
                    *(x for entry_id, fields in entries for x in (entry_id, fields[b"user"])),
                )
                for stream, entries in batches
            ]
            await pipelined(hot, acks)
        elif batches:
            pipe = hot.pipeline(transaction=False)
            for stream, entries in batches:
                pipe.xack(stream, group, *[entry_id for entry_id, _fields in entries])
            await pipe.execute()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_consumer")
    p.add_argument("--mode", choices=("chain", "drain", "protocol"), required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--jobs", required=True, nargs="+", help="the job streams to read")
    p.add_argument("--group", required=True)
    p.add_argument("--prefix", default="scanstream", help="protocol mode: the key prefix")
    p.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="protocol mode: the job partitions of the prefix's keys",
    )
    args = p.parse_args()
    import uvloop

    uvloop.run(
        consume(args.redis_url, args.mode, args.jobs, args.group, args.prefix, args.partitions)
    )


if __name__ == "__main__":
    main()
