"""Celery's side of bench.peers, run with the Celery venv's Python (it never imports
scanstream). The broker and the result backend are Redis: BENCH_CELERY_BROKER and
BENCH_CELERY_BACKEND (two databases of the bench's Redis), BENCH_CELERY_PREFETCH the
worker's prefetch multiplier.

- `worker --pool solo|prefork`: one Celery worker (`--concurrency 1`) for the no-op task;
- `enqueue --jobs N`: N no-op tasks through `noop.delay()` from one thread; prints JSON
  (seconds, jobs/s, first and last task id);
- `status --task-id ID --seconds S --threads T`: T threads (1: a plain sequential loop)
  reading `AsyncResult(id).state` for S seconds; prints JSON (lookups, lookups/s).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from celery import Celery

app = Celery(
    "celery_side",
    broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/2"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/3"),
)
app.conf.update(
    # The Optimizing guide: with many short tasks, a large prefetch multiplier (it names
    # 64 or 128) lets the worker process far more tasks a second.
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "128")),
    task_acks_late=False,  # the default: acknowledged when received, not after running
    task_ignore_result=False,  # results (states) are stored: status lookups need them
    result_expires=3600,
    worker_disable_rate_limits=True,  # no rate limits: skip their bookkeeping
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=True,
)


@app.task(name="noop")
def noop() -> None:
    """The no-op task."""
    return None


def worker(args: argparse.Namespace) -> None:
    argv = [
        "worker",
        f"--pool={args.pool}",
        "--concurrency=1",
        "--loglevel=WARNING",  # the INFO default logs two lines per task
        # no worker-to-worker chatter: nothing else to talk to (the docs' advice for
        # a lone worker; each costs broker traffic)
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if args.pool == "prefork":
        argv.append("-Ofair")  # the docs' scheduling for prefork (no effect with solo)
    app.worker_main(argv)


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    ids: list[str] = []
    noop.delay()  # connect the producer and the result consumer first, then drop it
    app.control.purge()
    t0 = time.perf_counter()
    for _ in range(args.jobs):
        ids.append(noop.delay().id)
    seconds = time.perf_counter() - t0
    return {
        "jobs": len(ids),
        "seconds": round(seconds, 3),
        "jobs_per_s": round(len(ids) / seconds),
        "first_id": ids[0],
        "last_id": ids[-1],
    }


def status(args: argparse.Namespace) -> dict[str, Any]:
    counts = [0] * args.threads
    wrong: list[str] = []

    def loop(n: int, until: float) -> None:
        while time.perf_counter() < until:
            state = app.AsyncResult(args.task_id).state
            if state != "SUCCESS":
                wrong.append(state)
            counts[n] += 1

    loop(0, time.perf_counter() + 0.3)  # connect first
    counts[0] = 0
    t0 = time.perf_counter()
    until = t0 + args.seconds
    if args.threads == 1:
        loop(0, until)
    else:
        threads = [threading.Thread(target=loop, args=(n, until)) for n in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - t0
    return {
        "lookups": sum(counts),
        "seconds": round(seconds, 3),
        "lookups_per_s": round(sum(counts) / seconds),
        "not_success": len(wrong),
        "first_wrong": wrong[:3],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("worker", "enqueue", "status"))
    p.add_argument("--pool", choices=("solo", "prefork"), default="solo")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--task-id", default="")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.command == "worker":
        worker(args)
        return
    run = enqueue if args.command == "enqueue" else status
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
