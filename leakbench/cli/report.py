"""``leakbench report``: summary tables (or one row per episode) over runs, and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from leakbench.cli import display
from leakbench.cli.state import state
from leakbench.report import (
    episode_rows,
    group_runs,
    load_runs,
    make_report,
    render,
    summary_rows,
    write_html_report,
)
from leakbench.report.render import plural
from leakbench.store.files import write_atomic

Format = Literal["table", "markdown", "csv", "json", "html"]


def report_command(
    ctx: typer.Context,
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            "-r",
            help="Run id or folder; an id prefix selects every run whose id starts with it. "
            "Repeatable. Default: every run.",
            metavar="ID",
        ),
    ] = None,
    episodes: Annotated[
        bool, typer.Option("--episodes", help="One row per episode instead of per group.")
    ] = False,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table, markdown, csv, json or html.")
    ] = "table",
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write to this file (default: stdout).", metavar="FILE"),
    ] = None,
) -> None:
    """Summarise runs per model, preset and threshold: pass rate [95% CI], errors, cost.

    Reads each run's manifest.json and episodes.jsonl (re-graded runs show their new verdicts).
    Runs graded with another metric or threshold are never pooled. Pass rate = passed /
    (episodes - errors); CSV and JSON name its 95% CI pass_rate_low and pass_rate_high. The
    HTML report is one file with the tables and plots (needs matplotlib: pip install
    'leakbench\\[plots]'); written with --out, it links every run and episode to a page in a
    folder next to it (report.html -> report_episodes/).

    Example: leakbench report --run 20260512 --format html --out report.html
    """
    app_state = state(ctx)
    settings = app_state.settings(None)
    results_dir = Path(settings.run.results_dir)
    fmt = "json" if json_out else fmt
    if fmt == "table" and out is None:
        runs = load_runs(results_dir, run or [])
        rows = episode_rows(runs) if episodes else summary_rows(group_runs(runs))
        display.print_table(render.table(rows, episodes))
        return
    if fmt == "html" and out is not None:
        written = write_html_report(
            results_dir, out, run or [], episodes=episodes, band=settings.calibrate.band
        )
        pages = plural(written.pages, "episode page")
        display.info(f"wrote {out} and {pages} in {written.pages_dir}")
        return
    text = make_report(
        results_dir, run or [], fmt=fmt, episodes=episodes, band=settings.calibrate.band
    )
    if out is None:
        display.print_text(text)
    else:
        write_atomic(out, text)
        display.info(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
