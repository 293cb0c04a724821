"""Baseline consumers: the least a Redis Streams job consumer can do, for the ratios.

    python -m bench.bare_consumer --mode chain|drain|protocol --redis-url URL --jobs KEY --group G

- `drain`: XREADGROUP COUNT 100, then one XACK for the batch; writes nothing. The floor
  of "take a job and acknowledge it" through redis-py (worker throughput baseline).
- `chain`: each job names a scan's events stream (field `events`); the consumer appends
  two events to it (started, completed: two round trips, as a worker's fenced start and
  finish are), the batch's jobs concurrently, then one XACK for the batch (POST to
  terminal-event latency baseline).
- `protocol`: scanstream jobs (`scan_id`, `strategy`) through scanstream's own fenced
  writes, `EventStore.start_strategy` then `finish_strategy` with a `strategy.completed`
  (the same Lua scripts and round trips as the worker, the terminal decision included),
  the batch's jobs concurrently, one XACK per batch; no task per job, no timeouts, no
  heartbeats, logs or metrics. The floor of the worker's protocol as it is today.

Same redis-py client settings as scanstream (`scanstream.storage.connection.client`), on uvloop
like the worker, so only the work per job differs. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from redis.asyncio import Redis

from scanstream import events as ev
from scanstream.storage import connection
from scanstream.storage.events import EventStore
from scanstream.storage.keys import Keys

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


async def consume(url: str, mode: str, jobs: str, group: str, prefix: str) -> None:
    hot = connection.client(url, max_connections=2 * READ_COUNT + 16)
    blocking = connection.client(url, max_connections=2)
    store = EventStore(hot, Keys(prefix), retention_s=3600)
    name = f"bare-{os.getpid()}"
    while True:
        reply = await blocking.xreadgroup(
            group, name, {jobs: ">"}, count=READ_COUNT, block=BLOCK_MS
        )
        for _stream, entries in reply or []:
            ids = [entry_id for entry_id, _fields in entries]
            if mode == "chain":
                await asyncio.gather(*(_chain_job(hot, fields) for _id, fields in entries))
            elif mode == "protocol":
                await asyncio.gather(
                    *(_protocol_job(store, name, fields) for _id, fields in entries)
                )
            if ids:
                await hot.xack(jobs, group, *ids)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_consumer")
    p.add_argument("--mode", choices=("chain", "drain", "protocol"), required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--jobs", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--prefix", default="scanstream", help="protocol mode: the key prefix")
    args = p.parse_args()
    import uvloop

    uvloop.run(consume(args.redis_url, args.mode, args.jobs, args.group, args.prefix))


if __name__ == "__main__":
    main()
