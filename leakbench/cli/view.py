"""``leakbench view``: a run at a glance, or one episode's transcript, submission and grade.

Everything an agent or its sandbox wrote (turn text, code, tool output, error messages) is
shown through ``display.printable`` inside ``rich.text.Text`` or ``rich.syntax.Syntax``: never
parsed as rich markup, and escape sequences appear as ``\\x1b`` instead of reaching the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich import box
from rich.console import RenderableType
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from leakbench.cli import display
from leakbench.cli.options import Json
from leakbench.cli.state import state
from leakbench.errors import UsageError
from leakbench.report.episode_page import write_episode_pages
from leakbench.report.episode_view import (
    EpisodeView,
    RunView,
    ToolCallView,
    load_episode,
    load_run_view,
    parse_index,
    select_run,
)
from leakbench.report.render import plural

PROMPT_LINES = 12  # lines of each prompt shown without --full
REASON_WIDTH = 100  # characters of the first reason in the run's table


def view_command(
    ctx: typer.Context,
    run: Annotated[
        str, typer.Argument(help="Run id, a unique prefix of one, or a run folder.", metavar="RUN")
    ],
    episode: Annotated[
        str | None,
        typer.Argument(
            help="Episode index (7 or 0007); without it, the run at a glance.",
            metavar="[EPISODE]",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Show the system and task prompts whole.")
    ] = False,
    json_out: Json = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write static HTML pages (one per episode, and an index) into this folder.",
            metavar="OUT",
        ),
    ] = None,
) -> None:
    """Show a run at a glance, or one episode's transcript, submission and grade.

    Without EPISODE: one line per episode (seed, outcome, score, steps, first failing reason,
    tokens, cost). With EPISODE: the prompts, every turn, tool call (code) and tool result,
    the submit attempts and the grade with every check. Works on runs still running or
    interrupted. Agent output is shown escaped: markup and terminal escapes are never acted on.

    Example: leakbench view 20260512 7 --full
    """
    if html is not None and json_out:
        raise UsageError("--json and --html cannot be combined: choose one output")
    results_dir = Path(state(ctx).settings(None).run.results_dir)
    selected = select_run(results_dir, run)
    index = None if episode is None else parse_index(episode)
    if html is not None:
        pages = write_episode_pages(selected, html, None if index is None else [index])
        index_page = Path(html) / selected.run_id / "index.html"
        display.info(f"wrote {plural(len(pages), 'episode page')} and {index_page}")
        return
    if index is None:
        run_view = load_run_view(selected)
        if json_out:
            display.print_json(_plain(run_view))
        else:
            _show(run_header(run_view), run_table(run_view))
        return
    view = load_episode(selected, index)
    if json_out:
        display.print_json(_plain(view))
    else:
        _show(*episode_renderables(view, full=full))


def _plain(model: BaseModel) -> Any:
    # model_dump_json writes NaN and infinities as null (strict JSON); model_dump would not
    return json.loads(model.model_dump_json())


def _show(*parts: RenderableType) -> None:
    console = display.out_console()
    for part in parts:
        console.print(part)


def _t(text: Any, style: str = "") -> Text:
    """Untrusted text, shown as written (escape sequences made visible, no markup)."""
    return Text(display.printable("" if text is None else str(text)), style=style)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _outcome(outcome: str) -> Text:
    styles = {"passed": "green", "failed": "red", "error": "bold red"}
    return _t(outcome, styles.get(outcome, "yellow"))


def _rule(title: str) -> Rule:
    return Rule(_t(title, "bold"), align="left")


# -- the run at a glance ------------------------------------------------------------------------


def run_header(view: RunView) -> Text:
    text = Text.assemble(("run ", "bold"), _t(view.run_id, "bold"), "\n")
    text.append_text(
        Text.assemble(
            _t(view.model),
            " · preset ",
            _t(view.preset),
            " · ",
            _t(view.status),
            f" · {view.done}/{view.planned} episodes done",
            f" · on {view.executor}" if view.executor != "local" else "",
        )
    )
    if view.metric:
        direction = "lower is better" if view.lower_is_better else "higher is better"
        text.append_text(
            Text.assemble(
                "\nmetric ", _t(view.metric), f" ({direction}), threshold {view.threshold:.4g}"
            )
        )
    return text


def run_table(view: RunView) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right")
    table.add_column("seed", justify="right")
    table.add_column("outcome")
    table.add_column(_t(view.metric or "score"), justify="right")
    table.add_column("steps", justify="right")
    table.add_column("first failing reason")
    table.add_column("tokens", justify="right")
    table.add_column("cost", justify="right")
    for row in view.episodes:
        reason = (row.reason or "").split("\n", 1)[0]
        if len(reason) > REASON_WIDTH:
            reason = reason[: REASON_WIDTH - 1] + "…"
        table.add_row(
            f"{row.index:04d}",
            "-" if row.seed is None else str(row.seed),
            _outcome(row.outcome),
            _num(row.score),
            str(row.steps),
            _t(reason),
            f"{row.tokens:,}",
            _cost(row.cost_usd),
        )
    if not view.episodes:
        table.add_row("", "", Text("no episode begun yet", style="dim"), *[""] * 5)
    return table


# -- one episode ---------------------------------------------------------------------------------


def episode_renderables(view: EpisodeView, *, full: bool = False) -> list[RenderableType]:
    """Header, error, prompts, turns, submission and grade, in that order."""
    parts: list[RenderableType] = [_episode_header(view)]
    if view.error or view.harness_fault:
        parts.append(_rule("error"))
        if view.error:
            parts.append(_t(view.error, "red"))
        if view.harness_fault:
            parts.append(Text("harness fault traceback:", style="bold"))
            parts.append(_t(view.harness_fault.rstrip("\n")))
    for name, prompt in (("system prompt", view.system), ("task", view.task)):
        if prompt is not None:
            parts += [_rule(f"{name} ({len(prompt):,} characters)"), _prompt(prompt, full)]
    for turn in view.turns:
        parts.append(_rule(f"step {turn.step}" + (f" · {turn.stop}" if turn.stop else "")))
        if turn.text:
            parts.append(_t(turn.text))
        for call in turn.tool_calls:
            parts += _tool_call(call)
    if not view.turns:
        parts.append(Text("no turns yet", style="dim"))
    parts += _submission(view)
    parts += _grade(view)
    for problem in view.problems:
        parts.append(_t(f"not read: {problem}", "yellow"))
    return parts


def _episode_header(view: EpisodeView) -> Text:
    text = Text.assemble(
        (f"episode {view.index:04d}", "bold"),
        " of run ",
        _t(view.run_id),
        "\n",
        _t(view.agent or view.model),
        f" · seed {'-' if view.seed is None else view.seed} · ",
        _outcome(view.outcome),
    )
    record = view.record
    if record is not None:
        text.append(
            f" · {plural(record.steps, 'step')}, {plural(record.tool_calls, 'tool call')}, "
            f"{plural(record.restarts, 'sandbox restart')} · tokens {view.tokens:,} · "
            f"cost {_cost(view.cost_usd)} · {record.wall_s:.1f}s"
        )
    else:
        text.append(" (no line in episodes.jsonl yet)", style="dim")
        text.append(
            f" · {plural(len(view.turns), 'step')} so far · tokens {view.tokens:,} · "
            f"cost {_cost(view.cost_usd)}"
        )
    return text


def _prompt(prompt: str, full: bool) -> Text:
    lines = prompt.rstrip("\n").split("\n")
    if full or len(lines) <= PROMPT_LINES:
        return _t("\n".join(lines))
    shown = _t("\n".join(lines[:PROMPT_LINES]))
    shown.append(
        f"\n… {len(lines) - PROMPT_LINES} more lines not shown (--full shows them)",
        style="dim italic",
    )
    return shown


def _tool_call(call: ToolCallView) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text.assemble(("→ ", "bold"), _t(call.name, "bold cyan"), " ", _t(f"({call.id})", "dim"))
    ]
    if call.code is not None:
        code = display.printable(call.code.strip("\n"))
        parts.append(Syntax(code, "python", background_color="default", word_wrap=True))
    else:
        arguments = json.dumps(call.input, indent=2, ensure_ascii=False)
        parts.append(Syntax(display.printable(arguments), "json", background_color="default"))
    if call.cut_off:
        parts.append(Text("[cut off by max_tokens: not run]", style="yellow"))
    if call.sandbox is not None:
        sandbox = call.sandbox
        notes = [] if sandbox.duration_s is None else [f"{sandbox.duration_s:.2f}s"]
        notes += ["TIMED OUT"] if sandbox.timed_out else []
        notes += ["sandbox restarted"] if sandbox.restarted else []
        notes += ["not ok"] if not sandbox.ok else []
        unusual = sandbox.timed_out or sandbox.restarted
        parts.append(Text("sandbox: " + ", ".join(notes), style="yellow" if unusual else "dim"))
    result = call.result
    if result is None:
        parts.append(Text("(no tool result recorded)", style="dim"))
        return parts
    parts.append(Text("← result" + (" (error)" if result.is_error else ""), style="bold"))
    parts.append(_t(result.content.rstrip("\n"), "red" if result.is_error else ""))
    if result.truncated:
        parts.append(
            Text(
                f"[output truncated by the sandbox: {result.dropped_chars:,} more characters]",
                style="yellow",
            )
        )
    if result.withheld:
        parts.append(Text("[output withheld by the print-values guard]", style="yellow"))
    return parts


def _submission(view: EpisodeView) -> list[RenderableType]:
    parts: list[RenderableType] = [_rule("submission")]
    if view.record is not None:
        parts.append(Text(f"submit attempts counted by the harness: {view.record.submit_attempts}"))
    for attempt in view.submissions:
        verdict = ("accepted", "green") if attempt.accepted else ("refused", "red")
        parts.append(Text.assemble(f"  step {attempt.step}: ", verdict, ": ", _t(attempt.message)))
    if not view.submissions:
        parts.append(Text("no submit_answer call in the transcript", style="dim"))
    if view.submission_files:
        parts.append(Text.assemble("files: ", _t(", ".join(view.submission_files))))
    return parts


def _grade(view: EpisodeView) -> list[RenderableType]:
    parts: list[RenderableType] = [_rule("grade")]
    # The record is the verdict the run (or a re-grade) wrote; grade.json holds the evidence.
    verdict: Any = view.record if view.record is not None else view.grade
    if verdict is None:
        parts.append(Text("not graded yet", style="dim"))
        return parts
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("outcome", _outcome(verdict.outcome))
    if verdict.outcome != "error":
        op, direction = ("≤", "lower") if verdict.lower_is_better else ("≥", "higher")
        rule = f"{direction} is better: passes at {op} {verdict.threshold:.4g}"
        shown = (
            f"no score ({rule})"
            if verdict.score is None
            else f"{verdict.score:.4f} vs threshold {verdict.threshold:.4g} ({rule})"
        )
        table.add_row(_t(verdict.metric), Text(shown))
    table.add_row("failed checks", _t(", ".join(verdict.failed_checks) or "none"))
    table.add_row("leaks detected", _t(", ".join(verdict.leaks_detected) or "none"))
    parts.append(table)
    if verdict.reasons:
        parts.append(Text("reasons:", style="bold"))
        parts += [_t(f"  - {reason}") for reason in verdict.reasons]
    grade = view.grade
    if grade is not None and grade.metrics:
        parts.append(Text("metrics:", style="bold"))
        parts.append(_t("  " + "  ".join(f"{k} {_num(v)}" for k, v in grade.metrics.items())))
    if grade is not None and grade.checks:
        parts.append(Text("checks (grade.json):", style="bold"))
        for name, value in grade.checks.items():
            shown = json.dumps(_rounded(value), default=str, separators=(", ", ": "))
            parts.append(_t(f"  {name}: {shown}"))
    return parts


def _rounded(value: Any) -> Any:
    """``value`` with every float to 4 significant digits (``--json`` has them whole)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def register(app: typer.Typer) -> None:
    app.command("view")(view_command)
