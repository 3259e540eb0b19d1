"""``leakbench grade``: grade predictions or a pipeline against a generated instance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from leakbench.cli import display
from leakbench.cli.options import Json, Preset
from leakbench.cli.state import state
from leakbench.errors import UsageError

if TYPE_CHECKING:
    from leakbench.grading.grade import Grade


def grade_command(
    ctx: typer.Context,
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run ids or folders to re-grade with the current settings.", metavar="[RUN]..."
        ),
    ] = None,
    instance: Annotated[
        Path | None, typer.Option("--instance", "-i", help="Instance folder from `generate`.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="One probability per test row, in test.csv order: .npy (a 1-D float array, "
            "np.save) or .csv/.txt (a header row, then one value per row; see the description).",
            metavar="FILE",
        ),
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
    """Grade predictions or a pipeline against an instance, or re-grade finished runs.

    Scores probabilities for the instance's test rows, and/or a fitted pipeline, against the
    answer key: AUROC, Brier, log loss, ECE, oracle AUROC and regret, the Bayes-ceiling check,
    and with a pipeline the consistency check, holdout scores, leak audit and fingerprint.

    Predictions files: a .npy file holds a 1-D float array, as np.save(path, proba) writes it
    (for predict_proba output save proba[:, 1]; object arrays and pickles are refused). In a
    .csv or .txt file the first row is always the header, then one row per test row. The
    probabilities are the only column, after skipping an unnamed first column that holds the
    row index 0..n-1; with several columns, the one named y_pred_proba (or proba, probas,
    pred_proba, y_pred). So pd.Series(proba).to_csv(path, index=False),
    pd.Series(proba, name="y_pred_proba").to_csv(path) and
    np.savetxt(path, proba, header="y_pred_proba") are all read as written. A first row holding
    a number (other than pandas' default column labels 0, 1, ...) means the file has no header,
    and it is refused rather than read one row off.

    The preset defaults to the one the instance was generated with. A failed verdict exits 0
    (it is a result); an unreadable or invalid predictions file exits 2.

    With run ids instead, re-grades every episode of those runs under the current settings
    (the run's preset < --config < LEAKBENCH_* < --threshold) from what the episodes measured,
    and rewrites their grade.json, episodes.jsonl, manifest counts and settings.toml.

    Example: leakbench grade --instance instances/seed42 --predictions proba.csv

    Example: leakbench --config calibrated.toml grade 20261126T080000Z_local-baseline_1a2b3c
    """
    from leakbench.grading.external import grade_external
    from leakbench.task.files import read_instance, read_manifest

    if runs and instance is not None:
        raise UsageError("give run ids or --instance, not both")
    if runs:
        _regrade(ctx, runs, preset, threshold, json_out)
        return
    if instance is None:
        raise UsageError("nothing to grade", hint="give run ids, or --instance DIR")
    manifest = read_manifest(instance)
    settings = state(ctx).settings(preset or manifest.preset, {"grading.threshold": threshold})
    result = grade_external(read_instance(instance), settings, predictions, pipeline)
    if json_out:
        display.print_json(result.model_dump(mode="json"))
    else:
        display.print_table(grade_table(result))


def _regrade(
    ctx: typer.Context, runs: list[str], preset: str | None, threshold: float | None, json_out: bool
) -> None:
    from leakbench.grading.regrade import regrade_run
    from leakbench.store.runs import RunDir, find_run

    app_state = state(ctx)
    results_dir = Path(app_state.results_dir or app_state.settings(preset).run.results_dir)
    summary = []
    for ref in runs:
        run = RunDir.open(find_run(results_dir, ref))
        grading = app_state.settings(
            preset or run.manifest.preset, {"grading.threshold": threshold}
        ).grading
        records = regrade_run(run, grading)
        counts = run.manifest.counts
        summary.append({"run_id": run.run_id, "threshold": grading.threshold, **counts})
        if not json_out:
            display.print_text(
                f"{run.run_id}\t{grading.metric} threshold {grading.threshold:.4f}\t"
                f"passed {counts.get('passed', 0)} of {len(records)}"
            )
    if json_out:
        display.print_json(summary)


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
