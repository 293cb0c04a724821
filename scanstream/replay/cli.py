"""`scanstream replay`: timeline, time travel, export / import, verify, diff, re-run.

    scanstream replay SCAN_ID [--strategy S] [--type T] [--json]
    scanstream replay SCAN_ID --at ENTRY_ID|N | --until TIME [--step]
    scanstream replay SCAN_ID --export FILE | --verify [--api URL --token T] | --rerun S
    scanstream replay --file FILE ...            (any of the above, without Redis)
    scanstream replay import FILE [--as-new] [--user USER]
    scanstream replay diff A B                   (scan ids or files)

Exit status: 0 fine, 1 a difference was found (verify, diff, rerun), 2 an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson

from scanstream.errors import ScanstreamError
from scanstream.ids import is_scan_id
from scanstream.redact import redact
from scanstream.replay import show
from scanstream.replay.diff import diff
from scanstream.replay.exchange import export_log, read_export
from scanstream.replay.importing import import_log
from scanstream.replay.rerun import rerun
from scanstream.replay.source import (
    Log,
    ReplayError,
    entry_key,
    fetch_with_settings,
    is_entry_id,
    redis_url_of,
)
from scanstream.replay.timeline import select, timeline
from scanstream.replay.travel import prefix_length, state_at, steps
from scanstream.replay.verify import fetch_served, verify
from scanstream.settings import Settings
from scanstream.storage.connection import Storage

T = TypeVar("T")
DIFFERENT = 1
ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scanstream replay",
        description="Debug a scan from its log, live or exported.",
        epilog="Also: `scanstream replay import FILE [--as-new] [--user USER]` and "
        "`scanstream replay diff A B`. Redis: SCANSTREAM_REDIS_URL, SCANSTREAM_PREFIX.",
    )
    p.add_argument("scan_id", nargs="?", metavar="SCAN_ID", help="the scan (omit with --file)")
    p.add_argument("--file", metavar="FILE", help="read an exported log instead of Redis")
    p.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="S",
        help="only events of this strategy (repeatable)",
    )
    p.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="T",
        help="only events of this type; globs like 'strategy.*' (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="JSON for machines")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--at",
        metavar="ENTRY_ID|N",
        help="status and results as they were after this entry (N: the Nth, 1-based; -1: the last)",
    )
    when.add_argument(
        "--until",
        metavar="TIME",
        help="status and results as of this time (RFC 3339, or ms since the epoch)",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--step", action="store_true", help="walk event by event, showing what each one changed"
    )
    action.add_argument(
        "--export", metavar="FILE", help="write the log as JSON Lines ('-': stdout)"
    )
    action.add_argument(
        "--verify",
        action="store_true",
        help="check the log's invariants and compare with what the API serves",
    )
    action.add_argument(
        "--rerun",
        metavar="STRATEGY",
        help="run STRATEGY locally on the recorded params and compare findings",
    )
    p.add_argument("--api", metavar="URL", help="for --verify (default: $SCANSTREAM_API_URL)")
    p.add_argument("--token", metavar="T", help="for --verify (default: $SCANSTREAM_TOKEN)")
    return p


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scanstream replay import",
        description="Write an exported log into the configured Redis.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--as-new", action="store_true", help="under a new scan id")
    p.add_argument("--user", metavar="USER", help="owned by USER (rewrites user_id)")
    p.add_argument("--json", action="store_true")
    return p


def _diff_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scanstream replay diff", description="Compare two scans (scan ids or exported files)."
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["import"]:
            return _import(_import_parser().parse_args(argv[1:]))
        if argv[:1] == ["diff"]:
            return _diff(_diff_parser().parse_args(argv[1:]))
        return _replay(_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else ERROR
    except ScanstreamError as exc:
        print(f"scanstream replay: {redact(str(exc))}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return anyio.run(partial(fn, *args))


def _out(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _load(target: str, settings: Settings) -> Log:
    if is_scan_id(target):
        log: Log = _run(fetch_with_settings, settings, target)
        return log
    if Path(target).is_file():
        return read_export(target)
    raise ReplayError(f"{target[:80]!r} is neither a scan id nor an exported file")


def _replay(args: argparse.Namespace) -> int:
    if args.file:
        log = read_export(args.file)
        if args.scan_id and args.scan_id != log.scan_id:
            raise ReplayError(f"{args.file} holds {log.scan_id}, not {args.scan_id}")
    elif args.scan_id:
        log = _load(args.scan_id, Settings.from_env())
    else:
        raise ReplayError("give a SCAN_ID, or --file FILE")
    if args.export:
        return _export(log, args.export)
    if args.verify:
        return _verify(log, args)
    if args.rerun:
        return _rerun(log, args.rerun, args.json)
    if args.step:
        return _steps(log, args)
    if args.at is not None or args.until is not None:
        return _at(log, args)
    return _timeline(log, args)


def _timeline(log: Log, args: argparse.Namespace) -> int:
    rows = select(timeline(log.entries), strategies=args.strategy, types=args.type)
    if args.json:
        _out(
            {
                "scan_id": log.scan_id,
                "origin": log.origin,
                "entries": len(log.entries),
                "rows": [r.to_json() for r in rows],
            }
        )
        return 0
    out = show.console()
    out.print(show.header(log))
    out.print(show.timeline_table(rows, out.width))
    if len(rows) != len(log.entries):
        out.print(f"[dim]{len(rows)} of {len(log.entries)} entries shown[/dim]")
    return 0


def _at(log: Log, args: argparse.Namespace) -> int:
    snap = state_at(log.scan_id, log.entries, at=args.at, until=args.until)
    if args.json:
        _out(
            {
                "scan_id": log.scan_id,
                "at": {"count": snap.count, "entry_id": snap.entry_id},
                "status": snap.status,
                "results": snap.results,
            }
        )
        return 0
    out = show.console()
    out.print(show.header(log))
    out.print(show.snapshot_view(snap, len(log.entries)))
    return 0


def _steps(log: Log, args: argparse.Namespace) -> int:
    count = prefix_length(log.entries, at=args.at, until=args.until)
    keep = {
        r.n
        for r in select(timeline(log.entries[:count]), strategies=args.strategy, types=args.type)
    }
    walked = [s for s in steps(log.scan_id, log.entries, count=count) if s.n in keep]
    if args.json:
        _out(
            {
                "scan_id": log.scan_id,
                "steps": [
                    {
                        "n": s.n,
                        "entry_id": s.entry.id,
                        "type": s.entry.type,
                        "strategy": getattr(s.entry.event, "strategy", None),
                        "problem": s.entry.problem,
                        "changes": [c.to_json() for c in s.changes],
                    }
                    for s in walked
                ],
            }
        )
        return 0
    out = show.console()
    out.print(show.header(log))
    for line in show.steps_view(walked):
        out.print(line)
    return 0


def _export(log: Log, target: str) -> int:
    if target == "-":
        export_log(log, sys.stdout.buffer)
        sys.stdout.flush()
        return 0
    count = export_log(log, target)
    print(f"exported {log.scan_id}: {count} entries to {target}", file=sys.stderr)
    return 0


def _verify(log: Log, args: argparse.Namespace) -> int:
    api = args.api or os.environ.get("SCANSTREAM_API_URL")
    token = args.token or os.environ.get("SCANSTREAM_TOKEN")
    status = results = None
    if api:
        if not token:
            raise ReplayError("--verify against an API needs --token (or SCANSTREAM_TOKEN)")
        status, results = _run(fetch_served, api, token, log.scan_id)
        if log.prefix is not None and not args.file and _newer(status, log):
            # A running scan moved on since it was read: read it again, so the log holds
            # everything the API folded (the comparison stops at the served entry).
            log = _load(log.scan_id, Settings.from_env())
    report = verify(log, status=status, results=results)
    if args.json:
        _out(report.to_json())
    else:
        show.console().print(show.report_view(report))
    return 0 if report.ok else DIFFERENT


def _newer(served: Any, log: Log) -> bool:
    last = served.get("last_event_id") if isinstance(served, dict) else None
    return (
        isinstance(last, str)
        and is_entry_id(last)
        and bool(log.raw)
        and entry_key(last) > entry_key(log.raw[-1].id)
    )


def _rerun(log: Log, strategy: str, as_json: bool) -> int:
    report = _run(partial(rerun, log, strategy, settings=Settings.from_env()))
    if as_json:
        _out(report.to_json())
    else:
        show.console().print(show.rerun_view(report))
    return 0 if report.same else DIFFERENT


def _import(args: argparse.Namespace) -> int:
    log = read_export(args.file)
    settings = Settings.from_env()
    url = redis_url_of(settings)

    async def go() -> Any:
        storage = Storage.connect(settings, url=url, max_connections=2)
        try:
            return await import_log(
                storage.exchange,
                log,
                as_new=args.as_new,
                user=args.user,
                retention_s=settings.retention_s,
            )
        finally:
            await storage.aclose()

    imported = anyio.run(go)
    if args.json:
        _out(
            {
                "scan_id": imported.scan_id,
                "entries": imported.entries,
                "user_id": imported.user_id,
                "listed": imported.listed,
                "ttl_s": imported.ttl_s,
                "prefix": settings.prefix,
            }
        )
    else:
        show.console().print(show.import_view(imported, url, settings.prefix))
    return 0


def _diff(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    a, b = _load(args.a, settings), _load(args.b, settings)
    result = diff(a, b)
    if args.json:
        _out(result.to_json())
    else:
        show.console().print(show.diff_view(result))
    return 0 if result.empty else DIFFERENT
