"""``leakbench export``: write runs as Inspect AI eval logs, for ``inspect view``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from leakbench.cli import display
from leakbench.cli.state import state
from leakbench.errors import UsageError

FORMATS = ("inspect",)
LogFormat = Literal["eval", "json"]


def export_command(
    ctx: typer.Context,
    run: Annotated[
        str,
        typer.Argument(
            help="Run id or folder; an id prefix exports every run whose id starts with it.",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Export format: inspect (the only one yet).")
    ] = "inspect",
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the logs (Inspect's default log dir is ./logs).",
            metavar="DIR",
        ),
    ] = Path("logs"),
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Inspect log file format: eval or json.")
    ] = "eval",
) -> None:
    """Write a run as an Inspect AI eval log: one sample per episode with its chat, tool
    calls, token usage and grade; the pass rate and mean score as the log's results.

    Needs inspect_ai: pip install 'leakbench\\[inspect]'. Prints the path of each log written.
    Open them with `inspect view --log-dir DIR`, or print one as JSON with
    `inspect log dump FILE`. Exporting a run again replaces its log. See docs/export.md.

    Example: leakbench export 20261201T175931Z --out logs && inspect view --log-dir logs
    """
    from leakbench.report.inspect_log import export_inspect, require_inspect
    from leakbench.report.summary import select_runs
    from leakbench.store.runs import RunDir

    if fmt not in FORMATS:
        raise UsageError(
            f"unknown export format '{fmt}': only 'inspect' for now",
            hint="tables and JSON summaries come from `leakbench report`",
        )
    require_inspect()  # before reading any run: fail fast with the install line
    results_dir = Path(state(ctx).settings(None).run.results_dir)
    for path in select_runs(results_dir, run):
        written = export_inspect(RunDir.open(path), out, log_format=log_format)
        display.print_text(str(written))
    display.info(f"open with: inspect view --log-dir {out}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
