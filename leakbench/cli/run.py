"""``leakbench run``: run N graded episodes of one model or policy into a new run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from leakbench.cli import display
from leakbench.cli.options import Json, Preset, PublicSeeds, Seed
from leakbench.cli.state import state
from leakbench.errors import UsageError
from leakbench.settings import Settings
from leakbench.stats import pass_rate

if TYPE_CHECKING:
    from leakbench.runner.run import RunResult
    from leakbench.store.runs import RunDir

# Settings that change how fast a run goes, not what it measures: a resume may change them.
_RESUME_MAY_CHANGE = {"run.concurrency", "run.sandbox_concurrency", "run.results_dir"}


def run_command(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="anthropic/claude-haiku-4-5 (or just claude-haiku-4-5), or local/POLICY.",
        ),
    ] = None,
    runs: Annotated[int | None, typer.Option("--runs", "-n", help="Episodes in the run.")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-j", help="Episodes in flight at once.")
    ] = None,
    preset: Preset = None,
    seed: Seed = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Agent turns allowed per episode.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Finish an interrupted run (its id or folder).", metavar="RUN"
        ),
    ] = None,
    public_seeds: PublicSeeds = False,
    json_out: Json = False,
) -> None:
    """Run episodes of one model or policy, grading each as it ends.

    Each episode gets instance seed+i, a fresh sandbox, and the agent; it ends at the first valid
    submission, the step limit, or when the agent stops. Instances come from a fresh secret key
    kept in the run's private/instance.key (--public-seeds: from the seed alone). Results go to
    RESULTS_DIR/UTC-TIME_MODEL_ID/; the run id is printed last on stdout. Ctrl-C keeps
    every finished episode (exit 130); --resume finishes the run with the same key.

    Example: leakbench run --model local/baseline --runs 20
    """
    from leakbench.agents import canonical_model

    app_state = state(ctx)
    flags = {
        "agent.model": canonical_model(model) if model else None,
        "run.runs": runs,
        "run.concurrency": concurrency,
        "task.seed": seed,
        "agent.max_steps": max_steps,
        "task.public_seeds": True if public_seeds else None,
    }
    if resume is not None:
        run, settings = _resumed(ctx, resume, preset, flags)
    else:
        settings = app_state.settings(preset, flags)
        run = None
    result = perform_run(settings, run)
    _print_summary(result, json_out)


def perform_run(settings: Settings, run: RunDir | None = None) -> RunResult:
    """Run (or finish) a run with progress on stderr; Ctrl-C exits 130 with the resume command.

    Also used by ``calibrate --runs``. The API key is checked before the run folder is made.
    """
    from leakbench.agents import make_agent, parse_model
    from leakbench.cli.progress import RunProgress
    from leakbench.runner.prompts import build_prompts
    from leakbench.runner.run import execute_run
    from leakbench.sandbox import SandboxPool
    from leakbench.store.runs import RunDir

    provider, name = parse_model(settings.agent.model)
    # One spelling per model in run ids, manifests and reports (claude-x -> anthropic/claude-x).
    settings = settings.with_overrides({"agent.model": f"{provider}/{name}"})
    client = _client(settings, name) if provider == "anthropic" else None
    if run is None:
        run = RunDir.create(Path(settings.run.results_dir), settings, ["leakbench", *sys.argv[1:]])
    display.info(f"run {run.run_id}: {settings.run.runs} episodes of {settings.agent.model}")
    if settings.task.public_seeds:
        display.warn("task.public_seeds: anyone can regenerate these instances (not tamper-proof)")
    # Fully isolated workers see no results folder, working directory or .env (containment.py).
    with SandboxPool() as pool:
        pool.start()
        if pool.isolation != "full":
            why = pool.isolation_note or "run as root for full sandbox isolation"
            display.warn(f"isolation: {pool.isolation} ({why})")
        with RunProgress(stream_turns=display.verbosity() >= 1) as progress:
            try:
                return execute_run(
                    run,
                    settings,
                    lambda: make_agent(settings.agent.model, settings, client),
                    build_prompts(settings),
                    pool,
                    progress,
                )
            except KeyboardInterrupt:
                kept = len(run.records())
                display.error(
                    f"interrupted: {kept} finished episodes kept; "
                    f"finish with: leakbench run --resume {run.run_id}"
                )
                raise typer.Exit(130) from None


def _client(settings: Settings, model: str) -> Any:
    from leakbench.agents.anthropic import check_api_key, make_client

    client = make_client(settings.run)
    check_api_key(client, model)
    return client


def _resumed(
    ctx: typer.Context, resume: str, preset: str | None, flags: dict[str, Any]
) -> tuple[RunDir, Settings]:
    from leakbench.store.runs import RunDir, find_run

    app_state = state(ctx)
    results_dir = app_state.results_dir or Path(app_state.settings(preset).run.results_dir)
    run = RunDir.open(find_run(Path(results_dir), resume))
    saved = run.settings()
    given = {k: v for k, v in flags.items() if v is not None}
    if preset or app_state.config_files:
        wanted = app_state.settings(preset or saved.task.preset, given)
    else:
        wanted = saved.with_overrides(given)
    changed = [
        k for k in _diff(saved.model_dump(), wanted.model_dump()) if k not in _RESUME_MAY_CHANGE
    ]
    if changed:
        raise UsageError(
            f"run {run.run_id} was made with other settings ({', '.join(changed[:5])} differ)",
            hint="resume without changing them, or start a new run",
        )
    return run, saved.with_overrides({"run.concurrency": wanted.run.concurrency})


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _print_summary(result: RunResult, json_out: bool) -> None:
    records = result.records
    manifest = result.run.manifest
    counts = manifest.counts
    rate = pass_rate(records)
    low, high = rate.interval
    scores = [r.score for r in records if r.score is not None]
    summary = {
        "run_id": manifest.run_id,
        "path": str(result.run.path),
        "model": manifest.model,
        "preset": manifest.preset,
        "isolation": manifest.isolation,
        "public_seeds": manifest.public_seeds,
        "episodes": len(records),
        **{k: v for k, v in counts.items() if k != "done"},
        "pass_rate": rate.rate,
        "pass_rate_ci95": [low, high],
        "mean_score": sum(scores) / len(scores) if scores else None,
        "usage": manifest.usage,
        "wall_s": manifest.wall_s,
    }
    if json_out:
        display.print_json(summary)
        return
    shown = "-" if rate.rate is None else f"{rate.rate:.1%} [{low:.1%}, {high:.1%}]"
    mean = summary["mean_score"]
    table = Table(
        title=f"{manifest.model} on preset {manifest.preset}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("episodes", str(len(records)))
    for outcome in ("passed", "failed", "invalid", "no_submission", "error"):
        table.add_row(outcome, str(counts.get(outcome, 0)))
    table.add_row("pass rate [95% CI]", shown)
    table.add_row(f"mean {records[0].metric if records else 'score'}", _fmt(mean))
    usage = manifest.usage
    tokens = sum(int(usage.get(k, 0)) for k in ("input_tokens", "output_tokens"))
    cached = int(usage.get("cache_read_tokens", 0))
    table.add_row("tokens (cache reads)", f"{tokens:,} ({cached:,})")
    table.add_row("cost", f"${usage.get('cost_usd', 0.0):.4f}")
    table.add_row("wall time", f"{manifest.wall_s:.1f}s")
    table.add_row("isolation", manifest.isolation)
    if manifest.public_seeds:
        table.add_row("instances", "public seeds: NOT tamper-proof")
    display.print_table(table)
    display.print_text(manifest.run_id)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
