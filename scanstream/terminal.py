"""Live progress in the terminal: per-strategy bars drawn from the scan's event stream
(SSE), then a results table (rich).

A reader thread follows `GET /v1/scans/{id}/events` and reconnects with the last id it
received whenever the connection drops (or the server closes it early), so every event is
folded exactly once. The main thread folds what arrived with the same pure projection the
server uses (`scanstream.projection.fold`) and redraws about ten times a second.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from scanstream import events as ev
from scanstream import projection
from scanstream.client import ApiClient, ApiError, ApiUnreachable
from scanstream.live.sse import ends_stream
from scanstream.projection import ScanView

STATE_STYLE = {
    "pending": "dim",
    "queued": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
}
REDRAW_S = 0.1
RETRY_S = (0.2, 5.0)  # reconnect delays after a failure (doubling)
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Feed:
    """Follows a scan's event stream in a thread, reconnecting with `Last-Event-ID`."""

    client: ApiClient
    scan_id: str
    entries: queue.Queue[ev.LogEntry] = field(default_factory=queue.Queue)
    last_id: str | None = None
    reconnects: int = 0
    waiting: bool = False  # between a dropped connection and the next attempt
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Feed:
        threading.Thread(target=self._run, name=f"watch-{self.scan_id}", daemon=True).start()
        return self

    def _run(self) -> None:
        delay = RETRY_S[0]
        try:
            while not self.stopping.is_set():
                try:
                    for entry_id, type_, data in self.client.events(self.scan_id, self.last_id):
                        entry = ev.decode(entry_id, type_, data.encode())
                        self.entries.put(entry)
                        self.last_id = entry_id
                        delay = RETRY_S[0]
                        if ends_stream(entry):
                            return
                    if self.last_id is not None and self._ended():
                        return  # resumed after the end (204): nothing more will come
                except ApiUnreachable:
                    pass
                except ApiError as exc:
                    if exc.status not in RETRYABLE:
                        raise
                self.reconnects += 1
                self.waiting = True
                self.stopping.wait(delay)
                self.waiting = False
                delay = min(delay * 2, RETRY_S[1])
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self.client.http.close()
            self.done.set()

    def _ended(self) -> bool:
        return self.client.status(self.scan_id)["state"] in projection.TERMINAL_SCAN_STATES

    def drain(self, timeout_s: float) -> list[ev.LogEntry]:
        """Entries received since the last call (waits up to `timeout_s` for the first)."""
        try:
            out = [self.entries.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.entries.get_nowait())
            except queue.Empty:
                return out


class Board:
    """The bars: one for the scan, one per strategy, updated from a `ScanView`."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.fields[name]}", style="bold"),
            BarColumn(bar_width=None),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[state]}"),
            TextColumn("{task.fields[found]}", justify="right"),
            TextColumn("{task.fields[took]}", justify="right"),
            TextColumn("[dim]{task.fields[note]}"),
            console=console,
            transient=False,
            refresh_per_second=10,
            expand=True,
        )
        self.width = 20
        self.scan_task = self.progress.add_task(
            "", total=1.0, name="scan", state="", found="", took="", note="connecting"
        )
        self.tasks: dict[str, TaskID] = {}

    def draw(self, view: ScanView, note: str = "") -> None:
        self.width = max([4, *(len(n) + 2 for n in view.strategies)])
        now = ev.wall_ms()
        done = view.strategies_completed + view.strategies_failed
        self.progress.update(
            self.scan_task,
            completed=view.progress,
            name="scan".ljust(self.width),
            state=_state(view.state),
            found=f"{len(view.opportunities):>4} found",
            took=_took(view.created_at, view.finished_at, now),
            note=note or f"{done}/{len(view.strategies)} done",
        )
        for name, s in view.strategies.items():
            message = s.error.message if s.error and s.state != "completed" else s.message
            fields: dict[str, Any] = {
                "name": f"  {name}".ljust(self.width),
                "state": _state(s.state, s.attempts),
                "found": f"{s.opportunities:>4} found" if s.opportunities else " " * 10,
                "took": _took(s.started_at, s.finished_at, now),
                "note": message[:28],
            }
            task = self.tasks.get(name)
            if task is None:
                task = self.tasks[name] = self.progress.add_task("", total=1.0, **fields)
            self.progress.update(
                task, completed=1.0 if s.state == "completed" else s.progress, **fields
            )


def _took(start: str | None, end: str | None, now_ms: int) -> str:
    if not start:
        return " " * 6
    seconds = max(0, ((ev.ts_ms(end) if end else now_ms) - ev.ts_ms(start)) / 1000)
    return f"{seconds:5.1f}s"


def _state(state: str, attempts: int = 1) -> str:
    retry = f" #{attempts}" if attempts > 1 else "   "
    return f"[{STATE_STYLE.get(state, '')}]{state:<9}[/]{retry}"


def watch(
    client: ApiClient,
    scan_id: str,
    console: Console | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Draw the scan's progress live until it ends; print its results. 0 if it completed,
    1 if it did not, 130 if `stop` was set first (the scan goes on; nothing more is asked)."""
    console = console or Console()
    status = client.status(scan_id)  # a 404 or 401 is raised here, before any drawing
    console.print(f"[bold]{scan_id}[/] · {status['strategies_total']} strategies")
    feed = Feed(ApiClient(client.base_url, client.token), scan_id).start()
    view = projection.empty(scan_id)
    board = Board(console)
    try:
        with board.progress:
            while True:
                entries = feed.drain(REDRAW_S)
                if entries:
                    view = projection.fold(view, entries)
                if feed.error is not None:
                    raise feed.error
                board.draw(view, "reconnecting" if feed.waiting else "")
                if view.terminal or (feed.done.is_set() and feed.entries.empty()):
                    break
                if stop is not None and stop.is_set():
                    return 130
    finally:
        feed.stopping.set()
    print_results(console, client.results(scan_id))
    return 0 if view.state == "completed" else 1


def print_results(console: Console, results: dict[str, Any], limit: int = 20) -> None:
    opportunities = results["opportunities"]
    table = Table(
        title=f"{results['state']}: {len(opportunities)} opportunities"
        + (f" (best {limit})" if len(opportunities) > limit else "")
    )
    for column in ("score", "strategy", "symbol", "side", "expected return"):
        numeric = column in ("score", "expected return")
        table.add_column(column, justify="right" if numeric else "left")
    for o in opportunities[:limit]:
        table.add_row(
            f"{o['score']:.3f}",
            o["strategy"],
            o["symbol"],
            o["side"],
            f"{o['expected_return'] * 100:+.2f}%",
        )
    console.print(table)
