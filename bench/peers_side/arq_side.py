"""arq's side of bench.peers, run with the arq venv's Python (it never imports scanstream):

- `worker --redis-url URL --max-jobs N --poll-delay S`: one arq worker process for the
  no-op task, in burst mode (it exits once the queue is empty);
- `enqueue --redis-url URL --jobs N --batch B`: N no-op jobs through `ArqRedis.enqueue_job`,
  B at a time with asyncio.gather; prints JSON (seconds, jobs/s, first and last job id);
- `status --redis-url URL --job-id ID --seconds S --concurrency C`: C coroutines looking up
  the job's status (`Job(id, redis).status()`, or `.info()` with `--info`) in a loop for
  S seconds; prints JSON (lookups, lookups/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus
from arq.worker import Worker


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op job."""
    return None


def worker(args: argparse.Namespace) -> None:
    # The CLI (`arq module.WorkerSettings`) logs two INFO lines per job; like the other
    # peers, this worker logs warnings only (one cost fewer than scanstream's worker).
    logging.basicConfig(level=logging.WARNING)
    Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        burst=True,
        max_jobs=args.max_jobs,
        poll_delay=args.poll_delay,
        keep_result=3600,  # the default: results stay readable for status lookups
        handle_signals=True,
    ).run()


async def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    redis = await create_pool(RedisSettings.from_dsn(args.redis_url))
    try:
        ids: list[str] = []
        # connect first, untimed: the pool's connections for a batch in flight
        await asyncio.gather(*(redis.ping() for _ in range(args.batch)))
        t0 = time.perf_counter()
        for i in range(0, args.jobs, args.batch):
            n = min(args.batch, args.jobs - i)
            jobs = await asyncio.gather(*(redis.enqueue_job("noop") for _ in range(n)))
            ids += [j.job_id for j in jobs if j is not None]
        seconds = time.perf_counter() - t0
    finally:
        await redis.aclose()
    if len(ids) != args.jobs:
        raise SystemExit(f"enqueued {len(ids)} of {args.jobs}")
    return {
        "jobs": len(ids),
        "seconds": round(seconds, 3),
        "jobs_per_s": round(len(ids) / seconds),
        "first_id": ids[0],
        "last_id": ids[-1],
    }


async def status(args: argparse.Namespace) -> dict[str, Any]:
    redis = await create_pool(RedisSettings.from_dsn(args.redis_url))
    counts = [0] * args.concurrency
    wrong: list[str] = []

    async def loop(n: int, until: float) -> None:
        while time.perf_counter() < until:
            job = Job(args.job_id, redis)
            if args.info:
                info = await job.info()
                if info is None:
                    wrong.append("no info")
            else:
                state = await job.status()
                if state != JobStatus.complete:
                    wrong.append(str(state))
            counts[n] += 1

    try:
        await loop(0, time.perf_counter() + 0.3)  # warm the pool's first connection
        counts[0] = 0
        t0 = time.perf_counter()
        until = t0 + args.seconds
        await asyncio.gather(*(loop(n, until) for n in range(args.concurrency)))
        seconds = time.perf_counter() - t0
    finally:
        await redis.aclose()
    return {
        "lookups": sum(counts),
        "seconds": round(seconds, 3),
        "lookups_per_s": round(sum(counts) / seconds),
        "not_complete": len(wrong),
        "first_wrong": wrong[:3],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("worker", "enqueue", "status"))
    p.add_argument("--redis-url", required=True)
    p.add_argument("--max-jobs", type=int, default=10)
    p.add_argument("--poll-delay", type=float, default=0.5)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--job-id", default="")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--info", action="store_true")
    args = p.parse_args()
    if args.command == "worker":
        worker(args)
        return
    run = enqueue if args.command == "enqueue" else status
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
