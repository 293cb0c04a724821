"""Replay tooling: debug any scan from its log, live (Redis) or exported (a file).

    from scanstream import replay

    log = replay.load_log("scan_0190...")             # or a path to an exported .jsonl
    rows = replay.timeline(log.entries)               # one Row per entry
    snap = replay.state_at(log.scan_id, log.entries, at=12)   # or at="1718...-0", until=...
    snap.status, snap.results                         # exactly what the API served then
    for step in replay.steps(log.scan_id, log.entries): ...   # what each event changed
    replay.export_log(log, "scan.jsonl"); log2 = replay.read_export("scan.jsonl")
    await replay.import_log(storage.exchange, log2, as_new=True, user="bob", retention_s=86400)
    replay.verify(log, status=served_status, results=served_results).ok
    replay.diff(log_a, log_b)
    await replay.rerun(log, "momentum")

Every projection comes from `scanstream.projection.fold` and `scanstream.render`: the
very code the API answers with. See docs/replay.md.
"""

from scanstream.replay.changes import Change, changes
from scanstream.replay.diff import ScanDiff, diff
from scanstream.replay.exchange import (
    FORMAT_VERSION,
    export_lines,
    export_log,
    parse_export,
    read_export,
)
from scanstream.replay.fence import fence_fields
from scanstream.replay.importing import Imported, import_log
from scanstream.replay.rerun import LocalContext, RerunReport, rerun
from scanstream.replay.source import Log, RawEntry, ReplayError, fetch_log, load_log
from scanstream.replay.timeline import Row, select, timeline
from scanstream.replay.travel import Snapshot, Step, state_at, steps
from scanstream.replay.verify import Finding, Report, check_log, fetch_served, verify

__all__ = [
    "FORMAT_VERSION",
    "Change",
    "Finding",
    "Imported",
    "LocalContext",
    "Log",
    "RawEntry",
    "ReplayError",
    "Report",
    "RerunReport",
    "Row",
    "ScanDiff",
    "Snapshot",
    "Step",
    "changes",
    "check_log",
    "diff",
    "export_lines",
    "export_log",
    "fence_fields",
    "fetch_log",
    "fetch_served",
    "import_log",
    "load_log",
    "parse_export",
    "read_export",
    "rerun",
    "select",
    "state_at",
    "steps",
    "timeline",
    "verify",
]
