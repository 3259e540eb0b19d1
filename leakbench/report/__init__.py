"""Reports over runs: summary tables, per-episode rows, and the HTML report with plots.

Usable without the CLI::

    from leakbench.report import make_report
    text = make_report(Path("results"), fmt="markdown")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from leakbench.report import render
from leakbench.report.summary import (
    Group,
    LoadedRun,
    episode_rows,
    group_runs,
    load_runs,
    summary_rows,
)

__all__ = [
    "Group",
    "LoadedRun",
    "episode_rows",
    "group_runs",
    "load_runs",
    "make_report",
    "summary_rows",
    "write_html_report",
]


def make_report(
    results_dir: Path,
    run_ids: Sequence[str] = (),
    *,
    fmt: str = "markdown",
    episodes: bool = False,
    band: tuple[float, float] = (0.10, 0.40),
    width: int = 160,
) -> str:
    """The report as text in ``fmt`` (table, markdown, csv, json or html)."""
    if fmt not in render.FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if fmt == "html":
        from leakbench.report.plots import require_matplotlib

        require_matplotlib()  # before reading anything: fail fast and cheap
    runs = load_runs(results_dir, run_ids)
    groups = group_runs(runs)
    summary = summary_rows(groups)
    rows = episode_rows(runs) if episodes else None
    if fmt == "html":
        from leakbench.report.html import render_html

        return render_html(groups, summary, band, rows)
    data = rows if rows is not None else summary
    if fmt == "table":
        return render.table_text(data, episodes, width)
    if fmt == "markdown":
        return render.markdown(data, episodes)
    if fmt == "csv":
        return render.to_csv(data)
    return render.to_json(data)


@dataclass(frozen=True)
class HtmlReport:
    """What ``write_html_report`` wrote."""

    path: Path
    pages_dir: Path  # the episode pages (and an index per run)
    pages: int  # episode pages written


def write_html_report(
    results_dir: Path,
    out: Path,
    run_ids: Sequence[str] = (),
    *,
    episodes: bool = False,
    band: tuple[float, float] = (0.10, 0.40),
) -> HtmlReport:
    """Write the HTML report to ``out`` and every episode's page into a folder next to it
    (``report.html`` -> ``report_episodes/``), which the report links to."""
    from leakbench.report.html import episodes_folder, render_html, write_pages
    from leakbench.report.plots import require_matplotlib
    from leakbench.store.files import write_atomic

    require_matplotlib()
    runs = load_runs(results_dir, run_ids)
    groups = group_runs(runs)
    out = Path(out)
    folder = episodes_folder(out)
    links = write_pages(runs, folder, folder.name)
    rows = episode_rows(runs) if episodes else None
    write_atomic(out, render_html(groups, summary_rows(groups), band, rows, links))
    return HtmlReport(out, folder, len(links.episodes))
