"""Static HTML pages for a run's episodes (``leakbench view --html``), linked from the HTML report.

One self-contained page per episode (transcript, submission attempts, grade) and an index page
for the run; no JavaScript. Every string an agent or its sandbox could have written is passed
through ``html.escape``, code and output go in ``<pre>``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leakbench import __version__
from leakbench.report.episode_view import (
    EpisodeView,
    ToolCallView,
    episode_indices,
    load_episode,
    load_run_view,
)
from leakbench.store.files import write_atomic
from leakbench.store.runs import RunDir
from leakbench.untrusted import printable

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { overflow-wrap: anywhere; } td, th { overflow-wrap: break-word; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; white-space: pre-wrap;
      word-break: break-word; border-radius: 4px; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; border-bottom: 1px solid #ddd;
       text-align: left; vertical-align: top; }
.passed { color: #2a9d8f; } .failed, .error { color: #c0392b; }
.invalid, .no_submission, .running, .unfinished { color: #6c757d; }
.mark { color: #b36b00; font-style: italic; } details { margin: .4rem 0; }
.turn { border-left: 3px solid #ccd; padding-left: .8rem; margin: 1rem 0; }
"""


def episode_page_path(run_id: str, index: int) -> str:
    """Episode ``index``'s page, relative to the pages' folder: ``<run_id>/<index:04d>.html``."""
    return f"{run_id}/{index:04d}.html"


def write_episode_pages(
    run: RunDir, out_dir: Path, indices: Iterable[int] | None = None
) -> dict[int, Path]:
    """Write the pages of ``indices`` (default: every episode begun) and the run's index page
    under ``out_dir/<run_id>/``; returns the page written per episode index."""
    out_dir = Path(out_dir)
    records = run.records()  # once, not once per page
    wanted = episode_indices(run, records) if indices is None else sorted(set(indices))
    pages: dict[int, Path] = {}
    for index in wanted:
        view = load_episode(run, index, records)
        path = out_dir / episode_page_path(run.run_id, index)
        write_atomic(path, episode_html(view))
        pages[index] = path
    write_atomic(out_dir / run.run_id / "index.html", run_index_html(run, set(pages)))
    return pages


def _e(value: Any) -> str:
    """Any text for a page: control characters made visible (as the terminal view shows them,
    so a page holds no raw ESC or BEL), then HTML-escaped."""
    return html.escape(printable("" if value is None else str(value)), quote=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='generator' content='leakbench {_e(__version__)}'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _outcome(outcome: str) -> str:
    return f"<span class='{_e(outcome)}'>{_e(outcome)}</span>"


def _details(summary: str, inner: str) -> str:
    return f"<details><summary>{summary}</summary>{inner}</details>"


def _mark(text: str) -> str:
    return f"<p class='mark'>{_e(text)}</p>"


def _table(rows: list[tuple[str, str]]) -> str:
    """Rows of already escaped HTML cells."""
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def run_index_html(run: RunDir, linked: set[int] | None = None) -> str:
    """The run's index page: its manifest and one row per episode, linked to its page."""
    view = load_run_view(run)
    metric = view.metric or "score"
    body = [
        f"<h1>Run {_e(view.run_id)}</h1>",
        _table(
            [
                ("model", _e(view.model)),
                ("preset", _e(view.preset)),
                ("status", _e(view.status)),
                ("episodes", f"{view.done} done of {view.planned} planned"),
                ("created (UTC)", _e(view.created_at)),
            ]
        ),
        "<h2>Episodes</h2><table><tr><th>#</th><th>seed</th><th>outcome</th>"
        f"<th>{_e(metric)}</th><th>steps</th><th>reason</th><th>tokens</th><th>cost</th></tr>",
    ]
    for row in view.episodes:
        label = f"{row.index:04d}"
        if linked is None or row.index in linked:
            label = f"<a href='{row.index:04d}.html'>{label}</a>"
        cost = "unknown" if row.cost_usd is None else f"${row.cost_usd:.4f}"
        body.append(
            f"<tr><td>{label}</td><td>{_e(row.seed)}</td>"
            f"<td class='{_e(row.outcome)}'>{_e(row.outcome)}</td><td>{_num(row.score)}</td>"
            f"<td>{row.steps}</td><td>{_e(row.reason or '')}</td><td>{row.tokens:,}</td>"
            f"<td>{cost}</td></tr>"
        )
    body.append("</table>")
    return _page(f"leakbench run {view.run_id}", body)


def episode_html(view: EpisodeView) -> str:
    """One episode's page: header, prompts, turns, submission attempts, grade."""
    body = [
        f"<p><a href='index.html'>&larr; run {_e(view.run_id)}</a></p>",
        f"<h1>Episode {view.index:04d} {_outcome(view.outcome)}</h1>",
        _table(
            [
                ("run", _e(view.run_id)),
                ("model", _e(view.model)),
                ("seed", _e(view.seed)),
                ("steps", _e(view.record.steps if view.record else len(view.turns))),
                ("tokens (in + out)", f"{view.tokens:,}"),
                ("cost", "unknown" if view.cost_usd is None else f"${view.cost_usd:.4f}"),
            ]
        ),
    ]
    if view.error:
        body.append(f"<h2>Error</h2><pre>{_e(view.error)}</pre>")
    if view.harness_fault:
        body.append(_details("harness fault traceback", f"<pre>{_e(view.harness_fault)}</pre>"))
    body += _prompts(view)
    body += _turns(view)
    body += _submissions(view)
    body += _grade(view)
    if view.problems:
        body.append(
            "<h2>Not read</h2><ul>" + "".join(f"<li>{_e(p)}</li>" for p in view.problems) + "</ul>"
        )
    return _page(f"{view.run_id} episode {view.index:04d}", body)


def _prompts(view: EpisodeView) -> list[str]:
    out = ["<h2>Prompts</h2>"]
    for name, text in (("system prompt", view.system), ("task", view.task)):
        if text is not None:
            out.append(_details(f"{name} ({len(text):,} characters)", f"<pre>{_e(text)}</pre>"))
    return out


def _call(call: ToolCallView) -> list[str]:
    out = [f"<p><b>tool call</b> <code>{_e(call.name)}</code> <small>{_e(call.id)}</small></p>"]
    if call.code is not None:
        out.append(f"<pre class='code'>{_e(call.code)}</pre>")
    else:
        out.append(f"<pre>{_e(json.dumps(call.input, indent=2, ensure_ascii=False))}</pre>")
    if call.cut_off:
        out.append("<p class='mark'>cut off by max_tokens: not run</p>")
    sandbox = call.sandbox
    if sandbox is not None:
        notes = [f"{sandbox.duration_s:.2f}s" if sandbox.duration_s is not None else ""]
        notes += ["timed out"] if sandbox.timed_out else []
        notes += ["sandbox restarted"] if sandbox.restarted else []
        notes += ["failed"] if not sandbox.ok else []
        out.append(f"<p class='mark'>sandbox: {_e(', '.join(n for n in notes if n))}</p>")
    result = call.result
    if result is not None:
        label = "tool result (error)" if result.is_error else "tool result"
        out.append(f"<p><b>{label}</b></p><pre>{_e(result.content)}</pre>")
        if result.truncated:
            out.append(
                _mark(f"output truncated by the sandbox: {result.dropped_chars:,} more characters")
            )
        if result.withheld:
            out.append("<p class='mark'>output withheld by the print-values guard</p>")
    return out


def _turns(view: EpisodeView) -> list[str]:
    out = ["<h2>Transcript</h2>"]
    for turn in view.turns:
        out.append(f"<div class='turn'><h3>step {turn.step} <small>({_e(turn.stop)})</small></h3>")
        if turn.text:
            out.append(f"<pre>{_e(turn.text)}</pre>")
        for call in turn.tool_calls:
            out += _call(call)
        out.append("</div>")
    if not view.turns:
        out.append("<p class='mark'>no turns yet</p>")
    return out


def _submissions(view: EpisodeView) -> list[str]:
    out = ["<h2>Submission</h2>"]
    if view.record is not None:
        out.append(f"<p>{view.record.submit_attempts} submit attempt(s) counted by the harness</p>")
    if view.submissions:
        out.append("<table><tr><th>step</th><th>accepted</th><th>message</th></tr>")
        out += [
            f"<tr><td>{s.step}</td><td>{'accepted' if s.accepted else 'refused'}</td>"
            f"<td>{_e(s.message)}</td></tr>"
            for s in view.submissions
        ]
        out.append("</table>")
    if view.submission_files:
        out.append("<p>files: " + ", ".join(_e(f) for f in view.submission_files) + "</p>")
    return out


def _grade(view: EpisodeView) -> list[str]:
    grade, record = view.grade, view.record
    if grade is None and record is None:
        return ["<h2>Grade</h2><p class='mark'>not graded yet</p>"]
    source: Any = record if record is not None else grade
    direction = "lower is better" if source.lower_is_better else "higher is better"
    op = "&le;" if source.lower_is_better else "&ge;"
    out = [
        "<h2>Grade</h2>",
        _table(
            [
                ("outcome", f"<span class='{_e(source.outcome)}'>{_e(source.outcome)}</span>"),
                (
                    _e(source.metric),
                    f"{_num(source.score)} (pass: {op} {_num(source.threshold)}, {direction})",
                ),
                ("failed checks", _e(", ".join(source.failed_checks) or "none")),
                ("leaks detected", _e(", ".join(source.leaks_detected) or "none")),
            ]
        ),
    ]
    if source.reasons:
        out.append(
            "<h3>Reasons</h3><ul>" + "".join(f"<li>{_e(r)}</li>" for r in source.reasons) + "</ul>"
        )
    if grade is not None and grade.metrics:
        out.append(
            "<h3>Metrics</h3>" + _table([(_e(k), _num(v)) for k, v in grade.metrics.items()])
        )
    if grade is not None and grade.checks:
        out.append(
            "<h3>Checks</h3>"
            + _table(
                [
                    (_e(k), f"<pre>{_e(json.dumps(v, indent=1))}</pre>")
                    for k, v in grade.checks.items()
                ]
            )
        )
    return out
