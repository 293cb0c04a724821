"""Live progress in the terminal: per-strategy bars, then a results table (rich)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from scanstream.client import ApiClient

TERMINAL = {"completed", "failed", "cancelled"}
STATE_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def watch(
    client: ApiClient, scan_id: str, console: Console | None = None, poll_s: float = 0.25
) -> int:
    """Draw the scan's progress until it ends; print its results. Exit code 0 if completed."""
    console = console or Console()
    status = client.status(scan_id)
    console.print(f"[bold]{scan_id}[/] ({status['strategies_total']} strategies)")
    with Progress(
        TextColumn("{task.fields[name]:<24}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"),
        TextColumn("{task.fields[found]}"),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        while True:
            for s in status["strategies"]:
                fields = {
                    "name": s["name"],
                    "state": f"[{STATE_STYLE.get(s['state'], '')}]{s['state']}[/]",
                    "found": f"{s['opportunities']} found" if s["opportunities"] else "",
                }
                if s["name"] not in tasks:
                    tasks[s["name"]] = progress.add_task("", total=1.0, **fields)
                progress.update(tasks[s["name"]], completed=s["progress"], **fields)
            if status["state"] in TERMINAL:
                break
            time.sleep(poll_s)
            status = client.status(scan_id)
    print_results(console, client.results(scan_id))
    return 0 if status["state"] == "completed" else 1


def print_results(console: Console, results: dict[str, Any], limit: int = 20) -> None:
    opportunities = results["opportunities"]
    table = Table(
        title=f"{results['state']}: {len(opportunities)} opportunities"
        + (f" (best {limit})" if len(opportunities) > limit else "")
    )
    for column in ("score", "strategy", "symbol", "side", "expected return"):
        table.add_column(
            column, justify="right" if column in ("score", "expected return") else "left"
        )
    for o in opportunities[:limit]:
        table.add_row(
            f"{o['score']:.3f}",
            o["strategy"],
            o["symbol"],
            o["side"],
            f"{o['expected_return'] * 100:+.2f}%",
        )
    console.print(table)
