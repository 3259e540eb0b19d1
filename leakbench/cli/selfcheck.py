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
    from leakbench.selfcheck import PolicyRow, SelfCheck
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
    [95% Wilson CI], the mean score, its outcomes, the grader's failed checks (codes, with the
    leaks flagged), and for a trap the codes that name its own reason and in how many episodes
    they did; plus an oracle reference row (the true probabilities, graded directly).

    Exits 1 when a trap passes an episode, ends one in error, or has its own reason named in
    under 96% of its episodes; when an honest policy fails any check but the threshold; when
    the honest ladder is not strictly ordered by mean score (or a pass rate falls with
    quality); or, under a holdout metric, when the oracle passes under 95%.

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
        verdict = "in order" if check.ladder_rises() else "NOT in order"
        display.info(f"honest ladder ({ladder}): mean scores and pass rates {verdict}")
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
        ("outcomes", "left"),
        ("failed checks (episodes)", "left"),
        ("expects", "left"),
        ("named", "right"),
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
        if row.role == "honest" and check.rank(row.policy):
            role = f"honest #{check.rank(row.policy)}"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row.outcomes.items())) or "-"
        named = "-" if row.leak_named is None else f"{row.leak_named}/{row.episodes}"
        name = row.policy if row.role == "reference" else f"local/{row.policy}"
        expects = " | ".join(row.expect) or "-"
        table.add_row(
            name, role, rate, _fmt(row.mean_score), outcomes, _checks(row), expects, named
        )
    return table


def _checks(row: PolicyRow) -> str:
    """Failed-check codes with their episode counts; "leak" lists the kinds it flagged."""
    parts = []
    for code, n in sorted(row.failed_checks.items()):
        if code == "leak":
            kinds = ", ".join(
                f"{k} {v}" for k, v in sorted(row.detections.items()) if k != "preprocessing"
            )
            parts.append(f"leak {n} ({kinds})" if kinds else f"leak {n}")
        else:
            parts.append(f"{code} {n}")
    return ", ".join(parts) or "-"


def register(app: typer.Typer) -> None:
    app.command("selfcheck")(selfcheck_command)
