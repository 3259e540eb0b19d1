"""The HTML report: one self-contained file, tables plus plots embedded as base64 PNG.

matplotlib (the ``plots`` extra) is imported only here and only when a report is drawn; the
``Figure`` API is used directly, without pyplot, so no GUI backend or global state is involved.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from leakbench import __version__
from leakbench.errors import LeakbenchError
from leakbench.report.render import cells, plural
from leakbench.report.summary import Group, group_label
from leakbench.store.runs import EpisodeRecord, RunDir

RELIABILITY_CAP = 200  # episodes per group read for the reliability diagram
_COLORS = {
    "passed": "#2a9d8f",
    "failed": "#e76f51",
    "invalid": "#8d99ae",
    "no_submission": "#adb5bd",
    "error": "#6c757d",
}


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LeakbenchError(
            "the HTML report needs matplotlib: pip install 'leakbench[plots]'"
        ) from None


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _height(groups: Sequence[Group]) -> float:
    return 1.2 + 0.55 * max(1, len(groups))


def score_plot(groups: Sequence[Group]) -> str:
    """Each group's scores (jittered, coloured by outcome) with its threshold marked."""
    fig = _figure(9, _height(groups))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only; fixed so the picture is reproducible
    seen: set[str] = set()
    for y, group in enumerate(groups):
        records = [r for r in group.records if r.score is not None]
        for outcome in _COLORS:
            xs = [r.score for r in records if r.outcome == outcome]
            if not xs:
                continue
            ys = y + rng.uniform(-0.25, 0.25, len(xs))
            label = outcome if outcome not in seen else None
            seen.add(outcome)
            ax.scatter(xs, ys, s=14, alpha=0.7, color=_COLORS[outcome], label=label)
        for threshold in sorted({r.threshold for r in group.records}):
            ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black", lw=2)
    ax.plot([], [], color="black", lw=2, label="threshold")
    ax.set_yticks(range(len(groups)), [g.label for g in groups])
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("score (each group's grading metric)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def pass_rate_plot(rows: Sequence[dict[str, Any]], band: tuple[float, float]) -> str:
    """Pass rates with their 95% CI (Wilson), over the calibration band."""
    fig = _figure(9, _height(rows))
    ax = fig.add_subplot()
    ax.axvspan(band[0], band[1], color="#e9f5db", label=f"band {band[0]:.0%}–{band[1]:.0%}")
    for y, row in enumerate(rows):
        rate = row["pass_rate"]
        if rate is None:
            continue
        # never negative, even if a bound lands a rounding error on the wrong side of the rate
        err = [[max(0.0, rate - row["pass_rate_low"])], [max(0.0, row["pass_rate_high"] - rate)]]
        ax.errorbar([rate], [y], xerr=err, fmt="o", color="#264653", capsize=5)
        ax.annotate(
            f"{rate:.0%} of {row['graded']}",
            (rate, y),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    labels = [group_label(r["model"], r["preset"], r["metric"], r["threshold"]) for r in rows]
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("pass rate (95% CI, Wilson)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _labels(run: RunDir, seed: int, cache: dict[Path, Any]) -> np.ndarray:
    from leakbench.task.generate import make_instance

    if run.path not in cache:
        cache[run.path] = (run.settings().task, run.instance_key())
    task, key = cache[run.path]
    return np.asarray(make_instance(task, seed, key=key).y_test)


def reliability_data(
    group: Group, cap: int = RELIABILITY_CAP
) -> tuple[np.ndarray, np.ndarray, int]:
    """Submitted probabilities and the test labels (regenerated from the run's settings and
    instance key)."""
    probs, labels, used = [], [], 0
    cache: dict[Path, Any] = {}
    for loaded in group.runs:
        for record in loaded.records:
            if used >= cap:
                break
            file = loaded.run.episode_dir(record.index) / "submission" / "probabilities.csv"
            if record.outcome not in ("passed", "failed") or not file.is_file():
                continue
            try:
                p = np.loadtxt(file, delimiter=",", skiprows=1, ndmin=1, dtype=float)
                y = _labels(loaded.run, record.seed, cache)
            except (OSError, ValueError, LeakbenchError):
                continue
            if p.shape != y.shape:
                continue
            probs.append(p)
            labels.append(y)
            used += 1
    if not probs:
        return np.empty(0), np.empty(0), 0
    return np.concatenate(probs), np.concatenate(labels), used


def reliability_plot(groups: Sequence[Group], bins: int = 10) -> tuple[str, list[str]]:
    """Observed frequency against mean predicted probability, per group, in equal-width bins."""
    fig = _figure(6.5, 5.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    notes = []
    edges = np.linspace(0, 1, bins + 1)
    for group in groups:
        p, y, used = reliability_data(group)
        if not used:
            notes.append(f"{group.label}: no submitted probabilities to show")
            continue
        which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        xs, ys, sizes = [], [], []
        for b in range(bins):
            mask = which == b
            if mask.any():
                xs.append(p[mask].mean())
                ys.append(y[mask].mean())
                sizes.append(mask.sum())
        ece = float(np.sum(np.abs(np.array(xs) - np.array(ys)) * np.array(sizes)) / len(p))
        ax.plot(xs, ys, marker="o", label=f"{group.label} (ECE {ece:.3f}, {used} episodes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency of target = 1")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig), notes


def _per_episode(ax: Any, groups: Sequence[Group], values: Any, xlabel: str) -> None:
    rng = np.random.default_rng(1)
    for y, group in enumerate(groups):
        records: list[EpisodeRecord] = group.records
        for outcome, color in _COLORS.items():
            xs = [values(r) for r in records if r.outcome == outcome]
            if xs:
                ax.scatter(xs, y + rng.uniform(-0.25, 0.25, len(xs)), s=12, alpha=0.6, color=color)
    ax.set_yticks(range(len(groups)), [g.label for g in groups])
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def effort_plot(groups: Sequence[Group]) -> str:
    """Steps and cost per episode, per group."""
    fig = _figure(11, _height(groups))
    left, right = fig.subplots(1, 2, sharey=True)
    _per_episode(left, groups, lambda r: r.steps, "steps per episode")
    _per_episode(right, groups, lambda r: float(r.usage.get("cost_usd") or 0.0), "cost ($)")
    return _png(fig)


def _html_table(grid: list[list[tuple[str, str]]]) -> str:
    if not grid:
        return "<p>no rows</p>"
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in grid[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(text)}</td>" for _, text in row) + "</tr>"
        for row in grid
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f4f4f4; }
td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; display: block; margin-bottom: 1.5em; }
.note { color: #666; font-size: 13px; }
"""


def render_html(
    groups: Sequence[Group],
    summary: Sequence[dict[str, Any]],
    band: tuple[float, float],
    episodes: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The whole report as one HTML document with no external references."""
    require_matplotlib()
    score = score_plot(groups)
    rates = pass_rate_plot(summary, band)
    reliability, notes = reliability_plot(groups)
    effort = effort_plot(groups)
    runs = len({loaded.run.path for g in groups for loaded in g.runs})  # a run may span groups
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>leakbench report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>leakbench report</h1>",
        f'<p class="note">{plural(runs, "run")}, {plural(len(groups), "group")}; '
        f"leakbench {__version__}; "
        f"{stamp}. Pass rate = passed / (episodes − errors).</p>",
        "<h2>Summary</h2>",
        _html_table(cells(summary, episodes=False)),
        "<h2>Scores and thresholds</h2>",
        _img(score, "score distribution per group with the threshold marked"),
        "<h2>Pass rates</h2>",
        _img(rates, "pass rate per group with its 95% CI"),
        "<h2>Reliability of the submitted probabilities</h2>",
        f'<p class="note">Up to {RELIABILITY_CAP} episodes per group; labels regenerated '
        "from each run's settings.</p>",
        _img(reliability, "reliability diagram"),
        *(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        "<h2>Steps and cost per episode</h2>",
        _img(effort, "steps and cost per episode"),
    ]
    if episodes is not None:
        parts += ["<h2>Episodes</h2>", _html_table(cells(episodes, episodes=True))]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
