"""``leakbench runs``: the runs in the results folder, newest first, with their status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from leakbench.cli import display
from leakbench.cli.options import Json
from leakbench.cli.state import state
from leakbench.report.runs_list import RunRow, list_run_rows


def runs_command(ctx: typer.Context, json_out: Json = False) -> None:
    """List the runs in the results folder, newest first: status, episodes, pass rate, cost.

    One row per run: id, when it was made (UTC), model, preset, status (running, completed,
    completed_with_errors, interrupted), episodes done of planned, pass rate = passed /
    (episodes - errors), errors, and cost (unknown when the model has no price). A folder
    that is not a readable run is skipped with a warning.

    Example: leakbench --results-dir results runs --json
    """
    results_dir = Path(state(ctx).settings(None).run.results_dir)
    rows, skipped = list_run_rows(results_dir)
    for folder in skipped:
        display.warn(f"skipped {folder.path}: {folder.reason}")
    if json_out:
        display.print_json([row.as_dict() for row in rows])
    elif rows:
        display.print_table(_table(rows))
    if not rows:
        display.info(f"no runs in {results_dir} (make one with `leakbench run`)")


def _table(rows: list[RunRow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("run id", "created (UTC)", "model", "preset", "status"):
        table.add_column(name, no_wrap=name in ("run id", "created (UTC)"))
    for name in ("episodes", "pass rate", "errors", "cost"):
        table.add_column(name, justify="right")
    for row in rows:
        rate = "-" if row.pass_rate is None else f"{row.pass_rate:.1%}"
        cost = "unknown" if row.cost_usd is None else f"${row.cost_usd:.4f}"
        created = row.created_at.replace("T", " ")[:19]
        cells = (row.run_id, created, row.model, row.preset, row.status)
        # Text cells: a folder name or a model name is shown as written, never as rich markup.
        table.add_row(
            *(Text(display.printable(c)) for c in cells),
            f"{row.done}/{row.planned}",
            rate,
            str(row.errors),
            cost,
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_command)
