"""Rich renderings of replay results for people (`--json` prints plain JSON instead)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from scanstream.redact import redact
from scanstream.replay.changes import MISSING, Change
from scanstream.replay.diff import OpportunityDiff, ScanDiff
from scanstream.replay.importing import Imported
from scanstream.replay.rerun import RerunReport
from scanstream.replay.source import Log
from scanstream.replay.timeline import Row, plural
from scanstream.replay.travel import Snapshot, Step
from scanstream.replay.verify import Report

NARROW = 120  # below this many columns the timeline drops its wall-clock time
PIPE_WIDTH = 160  # rich assumes 80 columns when stdout is not a terminal
TYPE_STYLE = {
    "scan.requested": "bold",
    "strategy.started": "cyan",
    "strategy.progress": "dim",
    "opportunity.found": "green",
    "strategy.completed": "bold green",
    "strategy.failed": "red",
    "scan.cancel_requested": "yellow",
    "scan.completed": "bold green",
    "scan.failed": "bold red",
    "scan.cancelled": "bold yellow",
}
STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "dim",
    "pending": "dim",
}


def _row(table: Table, *cells: str | Text) -> None:
    """Add a row; plain strings stay plain (no rich markup: `[flaky]` is data, not a tag)."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def _offset(ms: int) -> str:
    return f"+{ms / 1000:.3f}s"


def _value(v: Any, limit: int = 60) -> str:
    if v is MISSING:
        return "-"
    if v is None:
        return "null"
    if isinstance(v, dict) and {"symbol", "side", "score"} <= v.keys():
        return f"{v['symbol']} {v['side']} score {v['score']:.3f}"  # an opportunity
    text = repr(v) if not isinstance(v, str) else v
    if isinstance(v, dict | list):
        import orjson

        text = orjson.dumps(v).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state(state: str | None) -> Text:
    return Text(state or "-", style=STATE_STYLE.get(state or "", ""))


def header(log: Log) -> Text:
    return Text.assemble(
        ("scan ", "dim"),
        (log.scan_id, "bold"),
        (f"  ({log.origin}, ", "dim"),
        (f"{len(log.entries)} entries", "dim"),
        (")", "dim"),
    )


def timeline_table(rows: Sequence[Row], width: int) -> Table:
    """One line per event: the summary is cut (with an ellipsis) to what `width` leaves;
    on a narrow terminal the wall-clock time gives way to the offset."""
    cells = [
        [
            str(r.n),
            r.time[11:23],
            _offset(r.offset_ms),
            r.entry_id,
            r.type or "(none)",
            r.strategy or "",
            "" if r.attempt is None else str(r.attempt),
        ]
        for r in rows
    ]
    names: tuple[str, ...] = ("#", "time", "offset", "entry id", "type", "strategy", "att")
    if width < NARROW:
        names = names[:1] + names[2:]
        cells = [c[:1] + c[2:] for c in cells]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    room = max(20, width - sum(widths) - 2 * len(names))
    table = Table(box=None, pad_edge=False, header_style="bold dim")
    for name in names:
        table.add_column(
            name, justify="right" if name in ("#", "offset", "att") else "left", no_wrap=True
        )
    table.add_column("summary", no_wrap=True, overflow="ellipsis")
    kind = names.index("type")
    for r, c in zip(rows, cells, strict=True):
        style = "bold red" if r.problem else TYPE_STYLE.get(r.type, "")
        summary = r.summary if len(r.summary) <= room else r.summary[: room - 1] + "…"
        _row(
            table,
            *c[:kind],
            Text(c[kind], style=style),
            *c[kind + 1 :],
            Text(summary, style="red" if r.problem else ""),
        )
    return table


def snapshot_view(snap: Snapshot, total: int) -> RenderableType:
    status, results = snap.status, snap.results
    head = Text.assemble(
        ("at entry ", "dim"),
        (f"{snap.count}/{total}", "bold"),
        ("  ", ""),
        (snap.entry_id or "(before any entry)", ""),
        ("  state ", "dim"),
        _state(status["state"]),
        ("  progress ", "dim"),
        (f"{status['progress'] * 100:.0f}%", ""),
        ("  opportunities ", "dim"),
        (str(status["opportunities_found"]), ""),
        ("  updated ", "dim"),
        ((status["updated_at"] or "-")[11:23], ""),
    )
    strategies = Table(box=None, header_style="bold dim", pad_edge=False)
    for name in ("strategy", "state", "attempts", "progress", "opps", "finished", "error"):
        strategies.add_column(name, no_wrap=name != "error")
    for s in status["strategies"]:
        error = s["error"]
        _row(
            strategies,
            s["name"],
            _state(s["state"]),
            str(s["attempts"]),
            f"{s['progress'] * 100:.0f}%",
            str(s["opportunities"]),
            (s["finished_at"] or "")[11:23],
            Text(f"{error['type']}: {error['message']}" if error else "", style="red"),
        )
    parts: list[RenderableType] = [head, strategies]
    if results["opportunities"]:
        parts.append(opportunities_table(results["opportunities"]))
    if status.get("warnings_count"):
        parts.append(
            Text(
                f"{status['warnings_count']} log warnings: "
                + "; ".join(f"{w['entry_id']}: {w['problem']}" for w in status["warnings"]),
                style="yellow",
            )
        )
    return Group(*parts)


def opportunities_table(opportunities: Iterable[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(
        box=None, header_style="bold dim", pad_edge=False, title=title, title_justify="left"
    )
    for name in ("score", "strategy", "symbol", "side", "return", "id"):
        table.add_column(
            name, justify="right" if name in ("score", "return") else "left", no_wrap=True
        )
    for o in opportunities:
        _row(
            table,
            f"{o['score']:.3f}",
            o["strategy"],
            o["symbol"],
            o["side"],
            f"{o['expected_return'] * 100:+.2f}%",
            o["id"],
        )
    return table


def changes_table(changes: Sequence[Change], before: str = "before", after: str = "after") -> Table:
    table = Table(box=None, header_style="bold dim", pad_edge=False)
    table.add_column("field")
    table.add_column(before, style="red")
    table.add_column(after, style="green")
    for c in changes:
        _row(table, c.path, _value(c.before), _value(c.after))
    return table


def steps_view(steps: Iterable[Step]) -> Iterable[RenderableType]:
    for step in steps:
        e = step.entry
        yield Text.assemble(
            (f"#{step.n} ", "bold"),
            (e.id + " ", "dim"),
            (e.type or "(none)", TYPE_STYLE.get(e.type, "")),
            (f"  {getattr(e.event, 'strategy', '')}", "") if e.event else "",
            (f"  unreadable: {e.problem}", "red") if e.problem else "",
        )
        if step.changes:
            for c in step.changes:
                line = Text.assemble(
                    ("    ", ""),
                    (c.path, ""),
                    ("  ", ""),
                    (_value(c.before), "red"),
                    (" → ", "dim"),
                    (_value(c.after), "green"),
                )
                line.no_wrap, line.overflow = True, "ellipsis"
                yield line
        else:
            yield Text("    (no change)", style="dim")


def report_view(report: Report) -> RenderableType:
    parts: list[RenderableType] = []
    verdict = Text("OK", style="bold green") if report.ok else Text("FAILED", style="bold red")
    parts.append(
        Text.assemble(
            ("verify ", "bold"),
            (report.scan_id, ""),
            ": ",
            verdict,
            (f"  ({report.entries} entries)", "dim"),
        )
    )
    if report.findings:
        table = Table(
            box=None,
            header_style="bold dim",
            pad_edge=False,
            title="log invariants",
            title_justify="left",
        )
        for name in ("severity", "kind", "entry id", "message"):
            table.add_column(name)
        for f in report.findings:
            _row(
                table,
                Text(f.severity, style="red" if f.severity == "error" else "yellow"),
                f.kind,
                f.entry_id or "",
                f.message,
            )
        parts.append(table)
    else:
        parts.append(Text("log invariants: all hold", style="green"))
    if not report.comparisons:
        parts.append(
            Text(
                "API comparison skipped: give --api URL and --token T "
                "(or SCANSTREAM_API_URL / SCANSTREAM_TOKEN)",
                style="dim",
            )
        )
    for c in report.comparisons:
        if c.changes:
            parts.append(
                Text(
                    f"{c.name} served by the API differs from the log's fold at {c.at}:",
                    style="red",
                )
            )
            parts.append(changes_table(c.changes, "API", "log"))
        else:
            parts.append(
                Text(f"{c.name}: the API serves exactly the fold (at {c.at})", style="green")
            )
    return Group(*parts)


def _opps_lines(d: OpportunityDiff) -> list[RenderableType]:
    out: list[RenderableType] = []
    for o in d.removed:
        out.append(Text(f"    - {o.id} {o.symbol} {o.side} score {o.score:.3f}", style="red"))
    for o in d.added:
        out.append(Text(f"    + {o.id} {o.symbol} {o.side} score {o.score:.3f}", style="green"))
    for oid, cs in d.changed:
        out.append(
            Text(
                f"    ~ {oid}: "
                + ", ".join(f"{c.path} {_value(c.before, 30)} → {_value(c.after, 30)}" for c in cs),
                style="yellow",
            )
        )
    return out


def diff_view(d: ScanDiff) -> RenderableType:
    parts: list[RenderableType] = [
        Text.assemble(
            ("diff ", "bold"),
            ("A ", "dim"),
            d.a,
            ("  B ", "dim"),
            d.b,
            "  ",
            Text("same", style="bold green") if d.empty else Text("different", style="bold red"),
        )
    ]
    if d.scan:
        parts.append(changes_table(d.scan, "A", "B"))
    table = Table(box=None, header_style="bold dim", pad_edge=False)
    for name in (
        "strategy",
        "state A",
        "state B",
        "att A",
        "att B",
        "ms A",
        "ms B",
        "same",
        "+",
        "-",
        "~",
    ):
        table.add_column(name)
    detail: list[RenderableType] = []
    for s in d.strategies:
        a, b, o = s.a, s.b, s.opportunities
        _row(
            table,
            Text(s.name, style="" if s.empty else "bold"),
            _state(a.state if a else None),
            _state(b.state if b else None),
            str(a.attempts) if a else "-",
            str(b.attempts) if b else "-",
            str(a.duration_ms) if a and a.duration_ms is not None else "-",
            str(b.duration_ms) if b and b.duration_ms is not None else "-",
            str(o.same),
            str(len(o.added)),
            str(len(o.removed)),
            str(len(o.changed)),
        )
        if not o.empty:
            detail.append(Text(f"  {s.name}:", style="bold"))
            detail += _opps_lines(o)
    parts.append(table)
    parts += detail
    parts.append(
        Text(f"scan duration: A {d.duration_ms[0]} ms, B {d.duration_ms[1]} ms", style="dim")
    )
    return Group(*parts)


def rerun_view(r: RerunReport) -> RenderableType:
    verdict = (
        Text("same findings", style="bold green") if r.same else Text("different", style="bold red")
    )
    rec = r.recorded
    parts: list[RenderableType] = [
        Text.assemble(("rerun ", "bold"), r.strategy, (" of ", "dim"), r.scan_id, "  ", verdict),
        Text(
            f"  recorded: attempt {rec.attempt} {rec.state}, "
            f"{plural(len(rec.opportunities), 'opportunity')}"
            + (f", {rec.error.type}: {rec.error.message}" if rec.error else "")
        ),
        Text(
            f"  local:    {plural(len(r.found), 'opportunity')} in {r.duration_ms} ms"
            + (f", raised {r.error.type}: {r.error.message}" if r.error else "")
        ),
        Text(
            f"  same {r.opportunities.same}, added {len(r.opportunities.added)}, removed "
            f"{len(r.opportunities.removed)}, changed {len(r.opportunities.changed)}"
        ),
    ]
    parts += _opps_lines(r.opportunities)
    parts += [Text(f"  note: {n}", style="yellow") for n in r.notes]
    return Group(*parts)


def import_view(imported: Imported, url: str, prefix: str) -> Text:
    ttl = f", expires in {imported.ttl_s} s" if imported.ttl_s else ""
    listed = f", listed for user {imported.user_id}" if imported.listed else ", not listed"
    return Text.assemble(
        ("imported ", "bold"),
        (imported.scan_id, "bold"),
        f" ({imported.entries} entries) into {redact(url)} prefix {prefix!r}{listed}{ttl}",
    )


def console() -> Console:
    """Colour only on a terminal (rich decides; NO_COLOR is honoured); wide when piped."""
    out = Console(highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(highlight=False, width=PIPE_WIDTH)
    return out
