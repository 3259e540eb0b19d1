"""``leakbench run``: run N graded episodes of one model or policy into a new run directory."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from leakbench.cli import display
from leakbench.cli.options import Json, Preset, PublicSeeds, Seed
from leakbench.cli.state import state
from leakbench.errors import EpisodesErrored, UsageError
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.stats import pass_rate

if TYPE_CHECKING:
    from leakbench.runner.run import Runner, RunResult
    from leakbench.store.runs import RunDir


class Executor(StrEnum):
    local = "local"
    ray = "ray"


# Settings that change how fast a run goes, not what it measures: a resume may change them.
_RESUME_MAY_CHANGE = {
    "run.concurrency",
    "run.sandbox_concurrency",
    "run.results_dir",
    "run.executor",
    "run.ray_address",
    "run.node_concurrency",
}


def run_command(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="anthropic/claude-haiku-4-5 (or just claude-haiku-4-5), openai/MODEL "
            "(any OpenAI-compatible server), or local/POLICY.",
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
    executor: Annotated[
        Executor | None,
        typer.Option(
            "--executor",
            help="Where episodes run: local (this machine) or ray (a Ray cluster's nodes; "
            'pip install "leakbench[ray]").',
            metavar="local|ray",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="The Ray cluster for --executor ray (HOST:PORT or auto); default RAY_ADDRESS, "
            "else a Ray started here.",
            metavar="ADDR",
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
    every finished episode (exit 130; SIGTERM: 143); --resume finishes the run with the same key.

    Exit codes: 0 the run finished (however many episodes passed); 3 it finished but some
    episodes ended in error (left out of the pass rate; --resume runs them again); 1 a failure
    such as a missing API key or a results folder that cannot be written; 2 bad usage.

    Example: leakbench run --model local/baseline --runs 20
    """
    from leakbench.agents import canonical_model
    from leakbench.cli.process import mark_command_start

    mark_command_start()
    app_state = state(ctx)
    flags = {
        "agent.model": canonical_model(model) if model else None,
        "run.runs": runs,
        "run.concurrency": concurrency,
        "task.seed": seed,
        "agent.max_steps": max_steps,
        "task.public_seeds": True if public_seeds else None,
        "run.executor": executor.value if executor else None,
        "run.ray_address": ray_address,
    }
    if resume is not None:
        run, settings = _resumed(ctx, resume, preset, flags)
    else:
        settings = app_state.settings(preset, flags)
        run = None
    result = perform_run(settings, run)
    _print_summary(result, json_out, settings)


def perform_run(settings: Settings, run: RunDir | None = None) -> RunResult:
    """The core's ``Runner`` with progress on stderr; Ctrl-C exits 130 and SIGTERM 143, each
    with the resume command, at any point once the run folder exists. Also used by
    ``calibrate --runs``."""
    from leakbench.cli.process import command_started, interrupt_exit_code, take_early_pool
    from leakbench.cli.progress import RunProgress
    from leakbench.runner.run import Runner

    # ``leakbench run`` launched the zygote before importing the command line (cli/process.py).
    pool = take_early_pool()
    made: RunDir | None = None
    try:
        with (
            contextlib.closing(pool) if pool is not None else contextlib.nullcontext(),
            Runner(settings, resume=run, pool=pool, argv=["leakbench", *sys.argv[1:]]) as runner,
        ):
            made = runner.run
            # scipy.stats (for the summary's interval) loads while this waits for the zygote.
            threading.Thread(
                target=importlib.import_module, args=("scipy.stats",), daemon=True
            ).start()
            assert made is not None
            n, model = runner.settings.run.runs, runner.settings.agent.model
            display.info(f"run {made.run_id}: {n} episode{'s' if n != 1 else ''} of {model}")
            if settings.task.public_seeds:
                display.warn(
                    "task.public_seeds: anyone can regenerate these instances (not tamper-proof)"
                )
            runner.start()
            _show_cluster(runner)
            # Fully isolated workers see no results folder, working directory or .env.
            if runner.isolation != "full":
                why = runner.isolation_note or "run as root for full sandbox isolation"
                display.warn(f"isolation: {runner.isolation} ({why})")
            with RunProgress(stream_turns=display.verbosity() >= 1) as progress:
                result = runner.execute(progress, command_started=command_started())
            _show_cluster(runner, final=True)
            return result
    except KeyboardInterrupt as exc:
        if made is None:
            raise
        _show_cluster(runner, final=True)
        kept = len(made.records())
        display.error(
            f"interrupted: {kept} finished episodes kept; "
            f"finish with: leakbench run --resume {made.run_id}"
        )
        raise typer.Exit(interrupt_exit_code(exc)) from None


def _show_cluster(runner: Runner, *, final: bool = False) -> None:
    """On a Ray cluster: its nodes when the run starts; at the end, what they played."""
    cluster = runner.cluster
    if cluster is None:
        return
    for note in cluster.notes:
        display.warn(f"ray: {note}")
    cluster.notes.clear()
    if not final:
        n = cluster.node_count
        display.info(f"ray: {n} node{'s' if n != 1 else ''}, one sandbox pool each")
        return
    played = ", ".join(f"{node} {n}" for node, n in sorted(cluster.stats.episodes.items()))
    rerun = cluster.stats.rerun
    again = f"; {rerun} run again after their node was lost" if rerun else ""
    display.info(f"ray: episodes per node: {played or 'none'}{again}")


def _resumed(
    ctx: typer.Context, resume: str, preset: str | None, flags: dict[str, Any]
) -> tuple[RunDir, Settings]:
    from leakbench.store.runs import RunDir, find_run

    app_state = state(ctx)
    results_dir = app_state.results_dir or Path(app_state.settings(preset).run.results_dir)
    run = RunDir.open(find_run(Path(results_dir), resume))
    saved = run.settings()
    given = {k: v for k, v in flags.items() if v is not None}
    # Every layer counts (a --preset or --config given again, LEAKBENCH_* variables, flags),
    # on top of the run's saved settings unless a preset is named.
    saved_layer = (f"run {run.run_id} settings.toml", saved.model_dump(mode="json"))
    wanted = resolve(
        SettingsSources(
            preset=preset,
            config_files=app_state.config_files,
            flags=given,
            base=None if preset else saved_layer,
        )
    )
    changed = [
        k for k in _diff(saved.model_dump(), wanted.model_dump()) if k not in _RESUME_MAY_CHANGE
    ]
    if changed:
        raise UsageError(
            f"run {run.run_id} was made with other settings ({', '.join(changed[:5])} differ)",
            hint="resume without changing them, or start a new run",
        )
    return run, saved.with_overrides(
        {key: _get(wanted, key) for key in sorted(_RESUME_MAY_CHANGE - {"run.results_dir"})}
    )


def _get(settings: Settings, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(settings, section), name)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


TOKEN_KINDS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache read"),
    ("cache_write_tokens", "cache write"),
)


def run_cost(settings: Settings, usage: dict[str, float]) -> float | None:
    """The run's cost in US dollars: 0 for a local policy, None when the model has no price."""
    from leakbench.agents import parse_model

    provider, name = parse_model(settings.agent.model)
    if provider == "local":
        return 0.0
    if name not in settings.pricing:
        return None
    return float(usage.get("cost_usd", 0.0))


def error_messages(records: list[Any], top: int = 3) -> list[tuple[str, int]]:
    """The most common error messages among the episodes that ended in ``error``."""
    counts = Counter(
        (r.error or "unknown").splitlines()[0][:200] for r in records if r.outcome == "error"
    )
    return counts.most_common(top)


def _print_summary(result: RunResult, json_out: bool, settings: Settings) -> None:
    from leakbench.cli.process import command_started

    records = result.records
    manifest = result.run.manifest
    counts = manifest.counts
    rate = pass_rate(records)
    low, high = rate.interval
    scores = [r.score for r in records if r.score is not None]
    usage = manifest.usage
    cost = run_cost(settings, usage)
    errors = error_messages(records)
    summary = {
        "run_id": manifest.run_id,
        "path": str(result.run.path),
        "model": manifest.model,
        "preset": manifest.preset,
        "status": manifest.status,
        "isolation": manifest.isolation,
        "executor": manifest.executor,
        "episodes_rerun": manifest.episodes_rerun,
        "public_seeds": manifest.public_seeds,
        "episodes": len(records),
        **{k: v for k, v in counts.items() if k != "done"},
        "pass_rate": rate.rate,
        "pass_rate_low": low,
        "pass_rate_high": high,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "tokens": {key: int(usage.get(key, 0)) for key, _ in TOKEN_KINDS},
        "cost_usd": cost,
        "command_wall_s": time.perf_counter() - command_started(),
        "run_wall_s": manifest.wall_s,
        "run_command_wall_s": manifest.command_wall_s,
        "errors": [{"message": m, "episodes": n} for m, n in errors],
    }
    if cost is None:
        display.warn(
            f"no price for {manifest.model}: cost unknown "
            "(add a [pricing.<model>] table to a config file)"
        )
    if json_out:
        display.print_json(summary)
    else:
        _print_table(summary, records)
    if errors:
        n = counts.get("error", 0)
        raise EpisodesErrored(
            f"{n} of {len(records)} episodes ended in error (left out of the pass rate): "
            + "; ".join(f"{m} ({k}x)" for m, k in errors),
            hint=f"run them again with: leakbench run --resume {manifest.run_id}",
        )


def _print_table(summary: dict[str, Any], records: list[Any]) -> None:
    rate, low, high = summary["pass_rate"], summary["pass_rate_low"], summary["pass_rate_high"]
    shown = "-" if rate is None else f"{rate:.1%} [{low:.1%}, {high:.1%}]"
    table = Table(
        title=f"{summary['model']} on preset {summary['preset']}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("episodes", str(summary["episodes"]))
    for outcome in ("passed", "failed", "invalid", "no_submission", "error"):
        table.add_row(outcome, str(summary.get(outcome, 0)))
    table.add_row("pass rate [95% CI]", shown)
    table.add_row(f"mean {records[0].metric if records else 'score'}", _fmt(summary["mean_score"]))
    for key, label in TOKEN_KINDS:
        table.add_row(f"tokens, {label}", f"{summary['tokens'][key]:,}")
    cost = summary["cost_usd"]
    table.add_row("cost", "unknown" if cost is None else f"${cost:.4f}")
    table.add_row("wall time, this command", f"{summary['command_wall_s']:.1f}s")
    table.add_row(
        "wall time, whole run",
        f"{summary['run_command_wall_s']:.1f}s (episodes {summary['run_wall_s']:.1f}s)",
    )
    table.add_row("status", summary["status"])
    table.add_row("isolation", summary["isolation"])
    if summary["executor"] != "local" or summary["episodes_rerun"]:
        rerun = summary["episodes_rerun"]
        again = f" ({rerun} episodes run again: their node was lost)" if rerun else ""
        table.add_row("executor", f"{summary['executor']}{again}")
    if summary["public_seeds"]:
        table.add_row("instances", "public seeds: NOT tamper-proof")
    display.print_table(table)
    display.print_text(summary["run_id"])


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
