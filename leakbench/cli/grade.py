"""``leakbench grade``: grade predictions or a pipeline against a generated instance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from leakbench.cli import display
from leakbench.cli.options import Json, Preset
from leakbench.cli.state import state
from leakbench.errors import UsageError
from leakbench.grading.external import grade_external
from leakbench.grading.grade import Grade
from leakbench.task.files import read_instance, read_manifest


def grade_command(
    ctx: typer.Context,
    instance: Annotated[
        Path | None, typer.Option("--instance", "-i", help="Instance folder from `generate`.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="CSV with one probability column (header optional), or .npy."),
    ] = None,
    pipeline: Annotated[
        Path | None,
        typer.Option(help="Pickled fitted pipeline; loaded only inside a sandbox worker."),
    ] = None,
    preset: Preset = None,
    threshold: Annotated[
        float | None, typer.Option(help="Pass mark (grading.threshold); default: the preset's.")
    ] = None,
    json_out: Json = False,
) -> None:
    """Grade predictions or a pickled pipeline against a generated instance.

    Scores probabilities for the instance's test rows, and/or a fitted pipeline, against the
    answer key: AUROC, Brier, log loss, ECE, oracle AUROC and regret, the Bayes-ceiling check,
    and with a pipeline the consistency check, holdout scores, leak audit and fingerprint.

    The preset defaults to the one the instance was generated with. A failed verdict exits 0
    (it is a result); an unreadable or invalid predictions file exits 2.

    Example: leakbench grade --instance instances/seed42 --predictions proba.csv
    """
    if instance is None:
        raise UsageError("missing --instance DIR", hint="see `leakbench grade --help`")
    manifest = read_manifest(instance)
    settings = state(ctx).settings(preset or manifest.preset, {"grading.threshold": threshold})
    result = grade_external(read_instance(instance), settings, predictions, pipeline)
    if json_out:
        display.print_json(result.model_dump(mode="json"))
    else:
        display.print_table(grade_table(result))


def grade_table(result: Grade) -> Table:
    table = Table(title=f"verdict: {result.outcome.upper()}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, "-" if value is None else f"{value:.4f}")
    direction = "<=" if result.lower_is_better else ">="
    table.add_row(f"pass mark ({result.metric} {direction})", f"{result.threshold:.4f}")
    for reason in result.reasons:
        table.add_row("reason", reason)
    return table


def register(app: typer.Typer) -> None:
    app.command("grade")(grade_command)
