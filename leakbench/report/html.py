"""The HTML report: one file of tables and plots (embedded as base64 PNG), linked to static pages
of each episode written into a folder next to it.

Every string a run holds (reasons, run ids, model names) may come from an agent or its sandbox:
all of it goes through ``_e`` (control characters made visible, then HTML-escaped), and links
are percent-encoded as well. The page has no JavaScript and no external references.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from leakbench import __version__
from leakbench.report.episode_page import episode_page_path, write_episode_pages
from leakbench.report.plots import DOWN, Plot, all_plots, require_matplotlib
from leakbench.report.render import cells, plural
from leakbench.report.runs_list import run_row
from leakbench.report.summary import (
    SHOWN_METRICS,
    Breakdown,
    Group,
    LoadedRun,
    failure_reasons,
    leak_detections,
    lower_is_better,
    metric_means,
)
from leakbench.untrusted import printable

__all__ = ["PageLinks", "episodes_folder", "render_html", "require_matplotlib", "write_pages"]

EXAMPLES = 5  # episodes linked per row of a breakdown
LOWER = f'<span class="lower" title="lower is better">{DOWN} lower is better</span>'
LOWER_SHORT = f'<span class="lower" title="lower is better">{DOWN}</span>'


def _e(value: Any) -> str:
    return html.escape(printable("" if value is None else str(value)), quote=True)


@dataclass
class PageLinks:
    """The episode pages written next to the report: ``folder`` is their folder's path
    relative to the report file."""

    folder: str
    episodes: set[tuple[str, int]] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)

    def _href(self, path: str) -> str:
        return html.escape(quote(f"{self.folder}/{path}"), quote=True)

    def episode(self, run_id: str, index: int) -> str | None:
        if (run_id, index) not in self.episodes:
            return None
        return self._href(episode_page_path(run_id, index))

    def run(self, run_id: str) -> str | None:
        return self._href(f"{run_id}/index.html") if run_id in self.runs else None


def episodes_folder(out: Path) -> Path:
    """Where the pages of a report written to ``out`` go: ``report.html`` -> ``report_episodes``."""
    return out.with_name(f"{out.stem}_episodes")


def write_pages(runs: Sequence[LoadedRun], folder: Path, relative: str) -> PageLinks:
    """Every episode page of ``runs`` (and each run's index page) under ``folder``; ``relative``
    is ``folder`` as the report links to it."""
    links = PageLinks(relative)
    for loaded in runs:
        if loaded.run_id in links.runs:
            continue
        pages = write_episode_pages(loaded.run, folder)
        links.runs.add(loaded.run_id)
        links.episodes |= {(loaded.run_id, index) for index in pages}
    return links


def _a(href: str | None, text: str) -> str:
    """``text`` (already escaped) linked to ``href`` (already escaped), or plain without one."""
    return text if href is None else f'<a href="{href}">{text}</a>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller)."""
    if not rows:
        return '<p class="note">no rows</p>'
    top = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    table = f"<table{klass}><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _breakable(text: str) -> str:
    """Escaped ``text`` that may wrap after a slash, hyphen or underscore (long model names)."""
    out = _e(text)
    for mark in ("/", "-", "_"):
        out = out.replace(mark, mark + "<wbr>")
    return out


def _group_head(group: Group) -> str:
    grading = group.metric if group.threshold is None else f"{group.metric} {group.threshold:.4g}"
    small = f"{_breakable(group.preset)} · {_breakable(grading)}"
    return f"{_breakable(group.model)}<br><small>{small}</small>"


def summary_table(groups: Sequence[Group], summary: Sequence[dict[str, Any]]) -> str:
    """The summary with a column per group (as in the terminal), so it fits a page."""
    grid = cells(summary, episodes=False)
    if not grid:
        return '<p class="note">no groups</p>'
    lower = [lower_is_better(g.metric) for g in groups]
    long_mark = f"<br>{LOWER}" if len(groups) <= 4 else f"&nbsp;{LOWER_SHORT}"
    rows = []
    for i, (label, _) in enumerate(grid[0]):
        head = _e(label) + (f" {LOWER_SHORT}" if label == "regret to oracle" else "")
        row = [f"<b>{head}</b>"]
        for low, group_cells in zip(lower, grid, strict=True):
            text = _e(group_cells[i][1])
            if low and label == "metric":
                text += long_mark
            elif low and label in ("threshold", "score mean ± sd") and text != "-":
                text += f"&nbsp;{LOWER_SHORT}"
            row.append(text)
        rows.append(row)
    return _table(["", *(_group_head(g) for g in groups)], rows, _summary_class(groups))


def _summary_class(groups: Sequence[Group]) -> str:
    # a column per group: past a few groups, let cells wrap and shrink the font to fit
    return "summary many" if len(groups) > 4 else "summary"


def metrics_table(groups: Sequence[Group]) -> str:
    """Mean of each metric per group, each marked with its direction."""
    means = [metric_means(g) for g in groups]
    rows = []
    for name in SHOWN_METRICS:
        if not any(name in m for m in means):
            continue
        mark = LOWER_SHORT if lower_is_better(name) else '<span title="higher is better">↑</span>'
        row = [f"<b>{_e(name)}</b> {mark}"]
        for m in means:
            mean, n = m.get(name, (None, 0))
            row.append("-" if mean is None else f"{mean:.4f} <small>({n})</small>")
        rows.append(row)
    if not rows:
        return '<p class="note">No graded submission: no metrics to show.</p>'
    return _table(["", *(_group_head(g) for g in groups)], rows, _summary_class(groups))


def runs_table(groups: Sequence[Group], links: PageLinks | None) -> str:
    """One row per run, linked to the run's index of episode pages."""
    rows, seen = [], set()
    for group in groups:
        for loaded in group.runs:
            if loaded.run.path in seen:
                continue
            seen.add(loaded.run.path)
            r = run_row(loaded.run)
            link = links.run(r.run_id) if links else None
            rate = "-" if r.pass_rate is None else f"{r.pass_rate:.1%}"
            cost = "unknown" if r.cost_usd is None else f"${r.cost_usd:.4f}"
            rows.append(
                [
                    f'<span class="id">{_a(link, _e(r.run_id))}</span>',
                    _e(r.model),
                    _e(r.preset),
                    _e(r.status),
                    f"{r.done} of {r.planned}",
                    str(r.passed),
                    str(r.errors),
                    rate,
                    cost,
                ]
            )
    head = ["run", "model", "preset", "status", "episodes", "passed", "errors", "pass rate", "cost"]
    return _table(head, rows, "runs")


def _examples(episodes: Sequence[tuple[str, int]], links: PageLinks | None) -> str:
    several_runs = len({run for run, _ in episodes}) > 1
    shown = []
    for run_id, index in episodes[:EXAMPLES]:
        text = f"{index:04d}"
        title = f' title="{_e(run_id)}"'
        href = links.episode(run_id, index) if links else None
        shown.append(
            f'<a href="{href}"{title}>{text}</a>' if href else f"<span{title}>{text}</span>"
        )
    more = f" and {len(episodes) - EXAMPLES} more" if len(episodes) > EXAMPLES else ""
    note = " <small>(hover for the run)</small>" if several_runs and shown else ""
    return ", ".join(shown) + more + note


def _share(count: int, total: int) -> str:
    return f"{count} <small>({count / total:.0%})</small>" if total else str(count)


def _none(groups: Sequence[Group], what: str) -> str:
    if not groups:
        return ""
    items = "".join(f"<li>{_e(g.label)} ({plural(len(g.records), 'episode')})</li>" for g in groups)
    return f'<div class="note">{what}:<ul>{items}</ul></div>'


def failure_tables(groups: Sequence[Group], links: PageLinks | None) -> str:
    """Per group: each failed-check code and outcome, how many episodes, most common first."""
    parts, clean = [], []
    for group in groups:
        rows = failure_reasons(group)
        if not rows:
            clean.append(group)
            continue
        parts.append(f"<h3>{_e(group.label)}</h3>")
        parts.append(
            _table(
                ["check", "what it means", "episodes", "e.g."],
                [_breakdown_row(b, len(group.records), links, code=True) for b in rows],
                "reasons",
            )
        )
    parts.append(_none(clean, "Nothing failed in"))
    return "\n".join(parts)


def leak_tables(groups: Sequence[Group], links: PageLinks | None) -> str:
    """Per group: each leak kind caught, the columns, how many episodes."""
    parts, clean = [], []
    for group in groups:
        rows = leak_detections(group)
        if not rows:
            clean.append(group)
            continue
        parts.append(f"<h3>{_e(group.label)}</h3>")
        parts.append(
            _table(
                ["leak kind", "what it is", "columns", "episodes", "e.g."],
                [_breakdown_row(b, len(group.records), links, code=False) for b in rows],
                "reasons",
            )
        )
    parts.append(_none(clean, "No leak detected in"))
    return "\n".join(parts)


def _breakdown_row(b: Breakdown, total: int, links: PageLinks | None, code: bool) -> list[str]:
    row = [f"<code>{_e(b.code)}</code>", f'<span class="wrap">{_e(b.description)}</span>']
    if not code:
        row.append(f'<span class="wrap">{_e(", ".join(b.columns or []))}</span>')
    return [*row, _share(b.count, total), _examples(b.episodes, links)]


def episodes_table(rows: Sequence[dict[str, Any]], links: PageLinks | None) -> str:
    """One row per episode, its index linked to the episode's page, under a row per run (the
    run's id, linked to its index page, would otherwise fill a column on every line)."""
    grid = cells(rows, episodes=True)
    if not grid:
        return '<p class="note">no episodes</p>'
    lower = [lower_is_better(r["metric"]) for r in rows]
    all_lower = all(lower)
    labels = [label for label, _ in grid[0] if label not in _RUN_CELLS]
    head = "".join(
        f"<th>score {LOWER}</th>" if label == "score" and all_lower else f"<th>{_e(label)}</th>"
        for label in labels
    )
    body, run_id = [], None
    for row, low, pairs in zip(rows, lower, grid, strict=True):
        if row["run_id"] != run_id:
            run_id = row["run_id"]
            link = _a(links.run(run_id) if links else None, _e(run_id))
            status = _e(row["run_status"])
            body.append(
                f'<tr class="run"><td colspan="{len(labels)}"><span class="id">{link}</span>'
                f" · {_e(row['model'])} · {_e(row['preset'])} · run {status}</td></tr>"
            )
        out = []
        for label, text in pairs:
            if label in _RUN_CELLS:
                continue
            cell = _e(text)
            if label == "index":
                cell = _a(links.episode(run_id, row["index"]) if links else None, cell)
            elif label == "score" and low and not all_lower:
                cell += f" {LOWER_SHORT}"
            elif label == "reasons":
                cell = f'<span class="wrap">{cell}</span>'
            out.append(f"<td>{cell}</td>")
        body.append("<tr>" + "".join(out) + "</tr>")
    table = f'<table class="wide"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
    return f'<div class="scroll">{table}</table></div>'


_RUN_CELLS = ("run", "run status")  # shown once per run, above its episodes


def _plot(plot: Plot) -> list[str]:
    parts = [f"<h2>{_e(plot.title)}</h2>"]
    parts += [f'<p class="note">{_e(note)}</p>' for note in plot.notes]
    if plot.png is not None:
        parts.append(f'<img src="data:image/png;base64,{plot.png}" alt="{_e(plot.alt)}">')
    return parts


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; color: #222;
       max-width: 1400px; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
.scroll { overflow-x: auto; max-width: 100%; margin-bottom: 1.2em; }
table { border-collapse: collapse; font-size: 13px; }
table.wide, table.many { font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap;
         vertical-align: top; }
th { background: #f4f4f4; text-align: center; white-space: normal; }
table.many td { white-space: normal; }
table.summary td:first-child { white-space: nowrap; }
td:first-child, table.reasons td, table.runs td:nth-child(-n+4) { text-align: left; }
table.wide td:nth-child(3), table.wide td:last-child, table.wide tr.run td {
  text-align: left; }
table.wide tr.run td { background: #fafafa; font-weight: 600; }
table.wide tr.run .id { max-width: none; }
.wrap { white-space: normal; display: inline-block; min-width: 12em; max-width: 40em; }
.id { overflow-wrap: anywhere; white-space: normal; display: inline-block; max-width: 22em; }
.lower { color: #8a4b00; font-size: 11px; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin-bottom: 1.2em; }
.note { color: #666; font-size: 13px; }
@media (max-width: 900px) {
  body { padding: 0 .5em; }
  table { font-size: 12px; } table.wide, table.many { font-size: 11px; }
  th, td { padding: 2px 4px; }
  .wrap { min-width: 9em; } .id { max-width: 10em; }
}
"""


def render_html(
    groups: Sequence[Group],
    summary: Sequence[dict[str, Any]],
    band: tuple[float, float],
    episodes: Sequence[dict[str, Any]] | None = None,
    links: PageLinks | None = None,
) -> str:
    """The whole report as one HTML document; with ``links``, linked to episode pages."""
    require_matplotlib()
    runs = len({loaded.run.path for g in groups for loaded in g.runs})  # a run may span groups
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pages = (
        f"Each run and episode links to its page (in <code>{_e(links.folder)}/</code>)."
        if links is not None
        else "Episode pages are written next to the report when it goes to a file (--out)."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>leakbench report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>leakbench report</h1>",
        f'<p class="note">{plural(runs, "run")}, {plural(len(groups), "group")}; '
        f"leakbench {_e(__version__)}; {stamp}. Pass rate = passed / (episodes − errors). "
        f"{DOWN} marks a metric where lower is better. {pages}</p>",
        "<h2>Summary</h2>",
        summary_table(groups, summary),
        "<h2>Runs</h2>",
        runs_table(groups, links),
        "<h2>Why episodes did not pass</h2>",
        '<p class="note">Each failed check (and the outcomes error, invalid, no_submission) '
        "with the episodes it applies to; an episode failing several checks counts under each."
        "</p>",
        failure_tables(groups, links),
        "<h2>Leaks detected, by kind</h2>",
        leak_tables(groups, links),
        "<h2>Metrics (mean over graded submissions)</h2>",
        metrics_table(groups),
    ]
    for plot in all_plots(groups, summary, band):
        parts += _plot(plot)
    if episodes is not None:
        parts += ["<h2>Episodes</h2>", episodes_table(episodes, links)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
