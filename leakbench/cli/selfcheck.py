"""``leakbench selfcheck``: run every local policy over K seeds and check the reward's validity."""

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
    from leakbench.selfcheck import SelfCheck
    from leakbench.store.runs import EpisodeRecord


def selfcheck_command(
    ctx: typer.Context,
    preset: Preset = None,
    seeds: Annotated[
        int, typer.Option("--seeds", "-k", min=1, help="Instances (seeds) per policy.")
    ] = 20,
    seed: Seed = None,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Only this local policy (repeatable); default: all."),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Keep the runs in the results dir (default: a temporary folder)."
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Check the reward: run every local policy over K seeds, plus an oracle reference.

    Each policy runs exactly as `leakbench run` would; per policy it prints the pass rate
    [95% Wilson CI], the mean score and the leaks the grader flagged, and an oracle reference
    row (the true probabilities, graded directly).

    Exits 1 when a trap policy passes an episode or its leak is not named in the reasons, or
    when the oracle passes under 95%.

    Example: leakbench selfcheck --preset default --seeds 50
    """
    from leakbench.agents.local import POLICIES
    from leakbench.selfcheck import run_selfcheck

    settings = state(ctx).settings(preset, {"task.seed": seed})
    names = list(policy or [])
    unknown = [n.removeprefix("local/") for n in names if n.removeprefix("local/") not in POLICIES]
    if unknown:
        raise UsageError(
            f"unknown local policy '{unknown[0]}'", hint=f"known: {', '.join(POLICIES)}"
        )
    keep_in = Path(settings.run.results_dir) if keep else None
    display.info(
        f"self-check of preset {settings.task.preset}: "
        f"{len(names) or len(POLICIES)} policies x {seeds} seeds"
    )
    check = run_selfcheck(
        settings,
        seeds,
        policies=[n.removeprefix("local/") for n in names] or None,
        keep_in=keep_in,
        on_episode=_progress,
    )
    if json_out:
        display.print_text(check.to_json())
    else:
        display.print_table(_table(check))
        for name, why in check.skipped.items():
            display.info(f"skipped local/{name}: {why}")
        ladder = " < ".join(r.policy for r in check.ladder())
        verdict = "rise" if check.ladder_rises() else "do NOT rise"
        display.info(f"honest ladder ({ladder}): pass rates {verdict} with quality")
    problems = check.problems()
    for problem in problems:
        display.error(f"self-check: {problem}")
    if problems:
        raise typer.Exit(1)


def _progress(policy: str, record: EpisodeRecord) -> None:
    display.debug(f"{policy} seed {record.seed}: {record.outcome}")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(check: SelfCheck) -> Table:
    from leakbench.agents.local import POLICIES

    op = "<=" if check.lower_is_better else ">="
    table = Table(
        title=(
            f"self-check: preset {check.preset}, {check.seeds} seeds from {check.first_seed}, "
            f"pass = {check.metric} {op} {check.threshold:g}"
        ),
        title_justify="left",
    )
    for header, justify in [
        ("policy", "left"),
        ("role", "left"),
        ("pass rate [95% CI]", "right"),
        (f"mean {check.metric}", "right"),
        ("leak detections (episodes)", "left"),
        ("trap named", "right"),
    ]:
        # the policy name must survive a narrow terminal whole; the other columns may wrap
        table.add_column(header, justify=justify, no_wrap=header == "policy")  # type: ignore[arg-type]
    for row in check.rows:
        rate = (
            "-"
            if row.pass_rate is None
            else f"{row.pass_rate:.0%} [{row.interval[0]:.0%}, {row.interval[1]:.0%}]"
        )
        role = row.role
        if row.role == "honest" and POLICIES[row.policy].rank:
            role = f"honest #{POLICIES[row.policy].rank}"
        detections = ", ".join(f"{k} {v}" for k, v in sorted(row.detections.items())) or "-"
        named = "-" if row.leak_named is None else f"{row.leak_named}/{row.episodes}"
        name = row.policy if row.role == "reference" else f"local/{row.policy}"
        table.add_row(name, role, rate, _fmt(row.mean_score), detections, named)
    return table


def register(app: typer.Typer) -> None:
    app.command("selfcheck")(selfcheck_command)
