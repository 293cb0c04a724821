"""No-op jobs/s through one worker, of several checkouts side by side in one run.

    python -m bench.worker_trees [--tree LABEL=PATH ...] [--levels 64 128]
                                 [--isolation thread inline] [--rounds 2] [--scans 1000]
                                 [--baselines] [--profile DIR] [--keep-logs]

Each tree is a checkout of scanstream (this one, "now", unless `--tree` names others; a
`git worktree add /tmp/before <commit>` of an older commit). Its worker runs with this
venv's interpreter and packages and the tree's own code (PYTHONPATH and working directory
its root), on the same private Redis, as bench.worker_throughput measures it
(`run_worker`): the same scans, each tree's jobs queued by its own layout (a tree from
before issue 9 by its own bench `_precreate`, on its one job stream; a later one through
the users' lanes, 20 users, on the job partitions).

Rounds are interleaved (every tree at every level and isolation, then again), so load
that drifts on the machine hits all alike; the best of the rounds is reported, with the
worker's CPU and Redis round trips and commands per job. `--baselines` adds the protocol
floor and the bare consumer of bench.worker_throughput (this tree's protocol).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, RESULTS_DIR, Bench, noisy, say
from bench.noop_strategies import NAMES
from bench.worker_throughput import (
    PARTITIONS,
    _line,
    best,
    legacy_tree,
    run_bare,
    run_protocol,
    run_worker,
    users_line,
)


def _tree(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--tree LABEL=PATH, not {text!r}")
    root = Path(path).resolve()
    if not (root / "scanstream" / "__init__.py").exists():
        raise argparse.ArgumentTypeError(f"{root} is not a scanstream checkout")
    return label, root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_trees")
    p.add_argument("--tree", type=_tree, action="append", default=[])
    p.add_argument("--levels", type=int, nargs="+", default=[64, 128])
    p.add_argument(
        "--isolation", nargs="+", choices=("thread", "inline", "process"), default=["thread"]
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scans", type=int, default=1000)
    p.add_argument("--baselines", action="store_true")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a folder: py-spy records each worker's drain there (collapsed stacks)",
    )
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    trees: dict[str, Path] = dict(args.tree) or {"now": REPO}
    b = Bench.start(quick=False, loadgen="python")
    jobs = args.scans * len(NAMES)
    say(
        f"{args.scans} scans x {len(NAMES)} no-ops = {jobs} jobs per run; trees: "
        + ", ".join(
            f"{label}={root}" + (" (one job stream)" if legacy_tree(root) else "")
            for label, root in trees.items()
        )
    )
    say(f"  partitioned trees: {PARTITIONS} partitions, {users_line()}")
    runs: dict[str, list[dict[str, Any]]] = {}
    out: dict[str, Any] = {"scans": args.scans, "jobs": jobs, "trees": {}, "runs": runs}
    try:
        for i in range(args.rounds):
            for iso in args.isolation:
                for n in args.levels:
                    for label, root in trees.items():
                        key = f"{label} {iso} c{n}"
                        say(f"round {i + 1}/{args.rounds}: {key} ...")
                        spy = None
                        if args.profile is not None:
                            args.profile.mkdir(parents=True, exist_ok=True)
                            spy = args.profile / f"{key.replace(' ', '-')}-r{i + 1}.txt"
                        m = run_worker(
                            b, args.scans, n, ["--isolation", iso], key, root=root, profile=spy
                        )
                        m.update(tree=label, isolation=iso)
                        runs.setdefault(key, []).append(m)
                        say(f"    {_line(m)}")
        if args.baselines:
            say("protocol floor (this tree's queue and fenced writes, no worker) ...")
            out["protocol"] = run_protocol(b, args.scans)
            say(f"    {_line(out['protocol'])}")
            say("bare consumer (XREADGROUP + XACK, no events, no lanes) ...")
            out["bare"] = run_bare(b, jobs)
            say(f"    {_line(out['bare'])}")
    finally:
        b.close(keep_logs=args.keep_logs)
        if args.keep_logs:
            say(f"logs kept in {b.tmp}")
    say()
    say(
        f"{'best of ' + str(args.rounds):<28}{'jobs/s':>8}{'per CPU-s':>11}{'worker CPU':>12}"
        f"{'redis CPU':>11}{'RTT/job':>9}{'cmds/job':>10}"
    )
    for key, ms in runs.items():
        m = best(ms)
        out["trees"][key] = m
        say(
            f"{key:<28}{m['jobs_per_s']:>8}{m['jobs_per_cpu_s'] or 0:>11}"
            f"{m['consumer_cpu']:>12.2f}{m['redis_cpu']:>11.2f}"
            f"{m['redis_round_trips_per_job']:>9}{m['redis_commands_per_job']:>10}"
            + ("  (noisy)" if noisy(m) else "")
        )
    for name in ("protocol", "bare"):
        if name in out:
            m = out[name]
            say(
                f"{name:<28}{m['jobs_per_s']:>8}{m['jobs_per_cpu_s'] or 0:>11}"
                f"{m['consumer_cpu']:>12.2f}{m['redis_cpu']:>11.2f}"
                f"{m['redis_round_trips_per_job']:>9}{m['redis_commands_per_job']:>10}"
            )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"worker_trees-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    say(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
