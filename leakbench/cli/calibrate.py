"""``leakbench calibrate``: the threshold at a quantile of graded scores, with its statistics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from leakbench.cli import display
from leakbench.cli.options import Json, Preset, Seed
from leakbench.cli.state import state
from leakbench.errors import UsageError

if TYPE_CHECKING:
    from leakbench.calibration import Calibration


def calibrate_command(
    ctx: typer.Context,
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            "-r",
            help="Run id (or folder) to use; repeatable. Default: every run of "
            "--model in the results dir.",
            metavar="ID",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Whose runs to use (default: agent.model)."),
    ] = None,
    quantile: Annotated[
        float | None,
        typer.Option(
            "--quantile", help="Quantile of the scores (default: calibrate.quantile, 0.85)."
        ),
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(
            "--runs", "-n", help="First run this many episodes of --model, then use them."
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-j", help="Episodes in flight (with --runs).")
    ] = None,
    preset: Preset = None,
    seed: Seed = None,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write",
            "-w",
            help="Write grading.threshold and a calibration record to this TOML file "
            "(load it with --config).",
            metavar="PATH",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Choose the pass threshold at a quantile of graded scores.

    Higher-is-better metrics: threshold = the q quantile (numpy 'higher'), pass = score >=
    threshold; lower-is-better (holdout_regret): the 1-q quantile ('lower'), pass = score <=
    threshold. Prints the pass rate that implies on the same episodes (leaks and other failures
    still fail), its 95% Wilson interval, whether it lies in calibrate.band, and how many episodes
    would make the interval fit in the band.

    Example: leakbench calibrate --model local/baseline --runs 20 --quantile 0.80 --write t.toml
    """
    from leakbench.calibration import (
        MIN_EPISODES,
        calibrate_runs,
        select_runs,
        write_calibration,
    )

    app_state = state(ctx)
    flags = {
        "agent.model": model,
        "calibrate.quantile": quantile,
        "run.runs": runs,
        "run.concurrency": concurrency,
        "task.seed": seed,
    }
    settings = app_state.settings(preset, flags)
    if runs is not None:
        if run:
            raise UsageError("--runs makes a new run to calibrate on: leave out --run")
        from leakbench.cli.run import perform_run

        chosen = [perform_run(settings).run]
    else:
        results_dir = Path(settings.run.results_dir)
        chosen = select_runs(results_dir, run or [], None if run else settings.agent.model)
    result = calibrate_runs(chosen, settings.calibrate.quantile, settings.calibrate.band)
    if not result.enough:
        needed = result.runs_needed
        more = (
            f"about {needed} episodes would fit its 95% interval in the band"
            if needed
            else "at this rate no number of episodes fits its interval in the band"
        )
        display.warn(
            f"only {result.used} usable episodes (fewer than {MIN_EPISODES}): the implied pass "
            f"rate is a rough guess; {more}"
        )
    if write is not None:
        write_calibration(write, result)
        display.info(f"wrote {write} (use it with: leakbench --config {write} ...)")
    if json_out:
        display.print_json(result.to_dict())
    else:
        _print(result)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print(c: Calibration) -> None:
    from leakbench.calibration import describe_rule

    table = Table(title=f"calibration of {', '.join(c.models)}", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("runs", str(len(c.runs)))
    excluded = f"{c.errors} errors, {c.invalid} invalid, {c.no_submission} no submission"
    table.add_row("episodes", f"{c.episodes} ({excluded})")
    table.add_row("used (episodes - errors)", str(c.used))
    table.add_row(f"scores ({c.metric})", str(c.scored))
    table.add_row("rule", describe_rule(c.metric, c.lower_is_better, c.quantile))
    table.add_row("threshold", f"{c.threshold:.6g}")
    table.add_row("implied passes", f"{c.passed} of {c.used}")
    low, high = c.interval
    table.add_row("implied pass rate [95% CI]", f"{_pct(c.pass_rate)} [{_pct(low)}, {_pct(high)}]")
    band = f"[{_pct(c.band[0])}, {_pct(c.band[1])}]"
    table.add_row(f"interval inside band {band}", "yes" if c.in_band else "no")
    needed = "never (rate outside the band)" if c.runs_needed is None else str(c.runs_needed)
    if c.runs_needed is not None and c.runs_needed > c.used:
        needed += f" ({c.runs_needed - c.used} more)"
    table.add_row("episodes for the interval to fit", needed)
    display.print_table(table)
    display.print_text(f"{c.threshold!r}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
