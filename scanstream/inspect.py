"""`scanstream inspect`: what the consumers are doing, for operators.

    scanstream inspect                    overview: groups, pending, dead letters, running scans
    scanstream inspect groups             consumer groups with lag, and their consumers
    scanstream inspect pending            pending jobs: owner, idle time, deliveries, scan, strategy
    scanstream inspect dead-letters       jobs whose strategy failed for good
    scanstream inspect running            scans in the running set, with their deadline
    scanstream inspect redrive ID...|--all   re-enqueue dead letters whose work can still count
    scanstream inspect drop ID...|--all      delete dead letters
    scanstream inspect prune-consumers    remove gone consumers that own no pending job
    scanstream inspect trim               drop acknowledged job entries now

Every command takes `--json` (machine-readable output on stdout). Reads
SCANSTREAM_REDIS_URL (or `--redis-url`) and SCANSTREAM_PREFIX. Exit status: 0, 1 when a
re-drive refused a letter, 2 when Redis cannot be reached or the settings are wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from scanstream.errors import ScanstreamError
from scanstream.events import wall_ms
from scanstream.redact import redact
from scanstream.settings import Settings
from scanstream.storage.connection import Storage
from scanstream.storage.dead_letters import DeadLetter
from scanstream.storage.job_info import JobStreamInfo, PendingJob

Command = Callable[["Ctx", argparse.Namespace], Awaitable[int]]


@dataclasses.dataclass
class Ctx:
    storage: Storage
    settings: Settings
    json: bool

    def emit(self, payload: Any, render: Callable[[], None]) -> None:
        if self.json:
            print(json.dumps(payload, indent=2, default=_plain))
        else:
            render()


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _parser() -> argparse.ArgumentParser:
    # SUPPRESS: given before or after the subcommand, neither default overwrites the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    common.add_argument(
        "--redis-url", default=argparse.SUPPRESS, help="default: SCANSTREAM_REDIS_URL"
    )
    p = argparse.ArgumentParser(
        prog="scanstream inspect",
        parents=[common],
        description="Consumer groups, lag, pending jobs, dead letters and running scans.",
    )
    sub = p.add_subparsers(dest="what")
    sub.add_parser("overview", parents=[common], help="everything below, briefly (the default)")
    sub.add_parser("groups", parents=[common], help="consumer groups, lag and consumers")
    for name, what in (
        ("pending", "pending jobs"),
        ("dead-letters", "dead letters"),
        ("running", "running scans"),
    ):
        one = sub.add_parser(name, parents=[common], help=what)
        one.add_argument("--limit", type=int, default=100)
    for name, what in (
        ("redrive", "re-enqueue dead letters whose work can still count"),
        ("drop", "delete dead letters"),
    ):
        one = sub.add_parser(name, parents=[common], help=what)
        one.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids")
        one.add_argument("--all", action="store_true", help="every dead letter")
    prune = sub.add_parser(
        "prune-consumers",
        parents=[common],
        help="remove consumers that own no pending job and stopped reading",
    )
    prune.add_argument(
        "--idle",
        type=float,
        default=None,
        help="seconds without a read (default: SCANSTREAM_CONSUMER_EXPIRY)",
    )
    sub.add_parser("trim", parents=[common], help="drop acknowledged job entries now")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.what in ("redrive", "drop") and bool(args.ids) == bool(args.all):
        print(
            f"scanstream inspect {args.what}: give dead-letter ids or --all (not both)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings.from_env()
        url = getattr(args, "redis_url", None) or settings.redis_url
        if not url:
            print(
                "scanstream inspect: set SCANSTREAM_REDIS_URL or pass --redis-url", file=sys.stderr
            )
            return 2
        return anyio.run(_run, settings, url, args)
    except ScanstreamError as exc:
        print(f"scanstream inspect: {redact(str(exc))}", file=sys.stderr)
        return 2


async def _run(settings: Settings, url: str, args: argparse.Namespace) -> int:
    storage = Storage.connect(settings, url=url, max_connections=4)
    ctx = Ctx(storage, settings, getattr(args, "json", False))
    try:
        return await COMMANDS[args.what or "overview"](ctx, args)
    finally:
        await storage.aclose()


# -- commands -----------------------------------------------------------------------------


async def _overview(ctx: Ctx, args: argparse.Namespace) -> int:
    info = await ctx.storage.job_info.stream_info()
    pending = await ctx.storage.job_info.pending_jobs(20)
    letters = await ctx.storage.dead_letters.newest(20)
    letter_count = await ctx.storage.dead_letters.count()
    running = await ctx.storage.running.scans(50)
    payload = {
        "prefix": ctx.storage.keys.prefix,
        "job_stream": info,
        "pending": pending,
        "dead_letters": {"count": letter_count, "newest": letters},
        "running_scans": [_running_row(ctx, r) for r in running],
    }

    def render() -> None:
        _render_groups(info)
        _render_pending(pending)
        _render_letters(letters, letter_count)
        _render_running(ctx, running)

    ctx.emit(payload, render)
    return 0


async def _groups(ctx: Ctx, args: argparse.Namespace) -> int:
    info = await ctx.storage.job_info.stream_info()
    ctx.emit(info, lambda: _render_groups(info))
    return 0


async def _pending(ctx: Ctx, args: argparse.Namespace) -> int:
    rows = await ctx.storage.job_info.pending_jobs(args.limit)
    ctx.emit({"pending": rows}, lambda: _render_pending(rows))
    return 0


async def _dead_letters(ctx: Ctx, args: argparse.Namespace) -> int:
    rows = await ctx.storage.dead_letters.newest(args.limit)
    count = await ctx.storage.dead_letters.count()
    ctx.emit({"count": count, "dead_letters": rows}, lambda: _render_letters(rows, count))
    return 0


async def _running(ctx: Ctx, args: argparse.Namespace) -> int:
    rows = await ctx.storage.running.scans(args.limit)
    ctx.emit(
        {"running_scans": [_running_row(ctx, r) for r in rows]}, lambda: _render_running(ctx, rows)
    )
    return 0


async def _redrive(ctx: Ctx, args: argparse.Namespace) -> int:
    letters = ctx.storage.dead_letters
    results = await letters.redrive(ctx.storage.events, None if args.all else args.ids)

    def render() -> None:
        if not results:
            print("no dead letters")
        for r in results:
            extra = f" as job {r.job_id}" if r.job_id else ""
            print(f"{r.letter_id}: {r.outcome}{extra}: {r.detail}")

    ctx.emit({"results": results}, render)
    return 0 if all(r.outcome == "requeued" for r in results) else 1


async def _drop(ctx: Ctx, args: argparse.Namespace) -> int:
    n = await ctx.storage.dead_letters.drop(None if args.all else args.ids)
    ctx.emit({"dropped": n}, lambda: print(f"dropped {n} dead letters"))
    return 0


async def _prune(ctx: Ctx, args: argparse.Namespace) -> int:
    idle_s = ctx.settings.consumer_expiry_s if args.idle is None else args.idle
    removed = await ctx.storage.upkeep.prune_consumers(int(idle_s * 1000))
    ctx.emit(
        {"removed": removed},
        lambda: print(
            f"removed {len(removed)} consumers" + (f": {', '.join(removed)}" if removed else "")
        ),
    )
    return 0


async def _trim(ctx: Ctx, args: argparse.Namespace) -> int:
    n = await ctx.storage.upkeep.trim()
    ctx.emit({"trimmed": n}, lambda: print(f"trimmed {n} acknowledged job entries"))
    return 0


COMMANDS: dict[str, Command] = {
    "overview": _overview,
    "groups": _groups,
    "pending": _pending,
    "dead-letters": _dead_letters,
    "running": _running,
    "redrive": _redrive,
    "drop": _drop,
    "prune-consumers": _prune,
    "trim": _trim,
}


# -- rendering ----------------------------------------------------------------------------


def _running_row(ctx: Ctx, r: Any) -> dict[str, Any]:
    age_ms = wall_ms() - r.created_ms
    state = r.terminal or ("missing" if not r.exists else "running")
    return {
        "scan_id": r.scan_id,
        "state": state,
        "age_s": round(age_ms / 1000, 1),
        "deadline_in_s": round(ctx.settings.scan_deadline_s - age_ms / 1000, 1),
        "strategies_total": r.total,
        "strategies_completed": r.completed,
        "strategies_failed": r.failed,
    }


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    return table


def _print(table: Any) -> None:
    from rich.console import Console

    # Piped (no terminal to fit), print ids whole rather than fold them into 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _secs(ms: int) -> str:
    return f"{ms / 1000:.1f}s"


def _render_groups(info: JobStreamInfo) -> None:
    table = _table(
        f"job streams: {info.length} entries",
        ["partition", "group", "consumers", "pending", "lag", "last delivered"],
    )
    for g in info.groups:
        lag = "?" if g.lag is None else f"{g.lag}{'+' if g.lag_capped else ''}"
        table.add_row(
            str(g.partition), g.name, str(g.consumers), str(g.pending), lag, g.last_delivered_id
        )
    _print(table)
    consumers = _table("consumers", ["name", "pending", "idle"])
    for c in info.consumers:
        consumers.add_row(c.name, str(c.pending), _secs(c.idle_ms))
    _print(consumers)


def _render_pending(rows: list[PendingJob]) -> None:
    table = _table(
        f"pending jobs: {len(rows)} shown",
        ["job", "owner", "idle", "deliveries", "scan", "strategy"],
    )
    for p in rows:
        table.add_row(
            p.job_id,
            p.consumer,
            _secs(p.idle_ms),
            str(p.deliveries),
            p.scan_id or "(body deleted)",
            p.strategy or "",
        )
    _print(table)


def _render_letters(rows: list[DeadLetter], count: int) -> None:
    table = _table(
        f"dead letters: {count} (newest {len(rows)} shown)",
        ["id", "scan", "strategy", "attempts", "error", "when"],
    )
    for d in rows:
        table.add_row(
            d.id, d.scan_id, d.strategy, str(d.attempts), f"{d.error_type}: {d.error}"[:80], d.ts
        )
    _print(table)


def _render_running(ctx: Ctx, rows: list[Any]) -> None:
    table = _table(
        f"running scans: {len(rows)} (deadline {ctx.settings.scan_deadline_s:g}s)",
        ["scan", "state", "age", "deadline in", "done / total"],
    )
    for r in rows:
        row = _running_row(ctx, r)
        done = f"{r.completed + r.failed} / {r.total}"
        if r.failed:
            done += f" ({r.failed} failed)"
        table.add_row(r.scan_id, row["state"], f"{row['age_s']}s", f"{row['deadline_in_s']}s", done)
    _print(table)
