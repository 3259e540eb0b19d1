"""The HTML report's plots, as base64 PNG, each left out (with a line saying why) when it would
have nothing to show.

matplotlib (the ``plots`` extra) is imported only here and only when a plot is drawn; the
``Figure`` API is used directly, without pyplot, so no GUI backend or global state is involved.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leakbench.errors import LeakbenchError
from leakbench.report.render import plural
from leakbench.report.runs_list import cost_known, cost_of
from leakbench.report.summary import Group, group_label, lower_is_better
from leakbench.store.runs import EpisodeRecord, RunDir

RELIABILITY_CAP = 200  # episodes per group read for the reliability diagram
COLORS = {
    "passed": "#2a9d8f",
    "failed": "#e76f51",
    "invalid": "#8d99ae",
    "no_submission": "#adb5bd",
    "error": "#6c757d",
}
DOWN = "\u2193"  # the lower-is-better marker, in plots as in the tables


@dataclass
class Plot:
    """One figure of the report; ``png`` is None when it was left out (``notes`` say why)."""

    title: str
    alt: str
    png: str | None = None
    notes: list[str] = field(default_factory=list)


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


def _height(groups: Sequence[Any]) -> float:
    return 1.2 + 0.55 * max(1, len(groups))


def _label(group: Group) -> str:
    down = f" {DOWN}" if lower_is_better(group.metric) else ""
    return group.label + down


def _rows(ax: Any, labels: Sequence[str]) -> None:
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.invert_yaxis()


def score_plot(groups: Sequence[Group]) -> Plot:
    """Each group's scores (jittered, coloured by outcome) with its threshold marked."""
    plot = Plot("Scores and thresholds", "score distribution per group with the threshold marked")
    if not any(r.score is not None for g in groups for r in g.records):
        plot.notes.append("Left out: no episode has a score (none was graded).")
        return plot
    fig = _figure(9, _height(groups))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only; fixed so the picture is reproducible
    seen: set[str] = set()
    for y, group in enumerate(groups):
        records = [r for r in group.records if r.score is not None]
        for outcome, color in COLORS.items():
            xs = [r.score for r in records if r.outcome == outcome]
            if not xs:
                continue
            ys = y + rng.uniform(-0.25, 0.25, len(xs))
            label = outcome if outcome not in seen else None
            seen.add(outcome)
            ax.scatter(xs, ys, s=14, alpha=0.7, color=color, label=label)
        for threshold in sorted({r.threshold for r in group.records}):
            ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black", lw=2)
    ax.plot([], [], color="black", lw=2, label="threshold")
    _rows(ax, [_label(g) for g in groups])
    metrics = {g.metric for g in groups if g.metric}
    if len(metrics) == 1:
        (metric,) = metrics
        better = "lower" if lower_is_better(metric) else "higher"
        ax.set_xlabel(f"score: {metric} ({better} is better)")
    else:
        ax.set_xlabel(f"score (each group's grading metric; {DOWN} lower is better)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    plot.png = _png(fig)
    return plot


def pass_rate_plot(rows: Sequence[dict[str, Any]], band: tuple[float, float]) -> Plot:
    """Pass rates with their 95% CI (Wilson), over the calibration band."""
    plot = Plot("Pass rates", "pass rate per group with its 95% CI")
    if not any(row["pass_rate"] is not None for row in rows):
        plot.notes.append("Left out: no group has a graded episode (all errors).")
        return plot
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
        # kept inside the axes at either end
        ha = "left" if rate < 0.1 else "right" if rate > 0.9 else "center"
        ax.annotate(
            f"{rate:.0%} of {row['graded']}",
            (rate, y),
            textcoords="offset points",
            xytext=(0, 8),
            ha=ha,
            fontsize=8,
        )
    _rows(ax, [group_label(r["model"], r["preset"], r["metric"], r["threshold"]) for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("pass rate (95% CI, Wilson)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    plot.png = _png(fig)
    return plot


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


def reliability_plot(groups: Sequence[Group], bins: int = 10) -> Plot:
    """Observed frequency against mean predicted probability, per group, in equal-width bins."""
    plot = Plot("Reliability of the submitted probabilities", "reliability diagram")
    data = [(group, *reliability_data(group)) for group in groups]
    if not any(used for *_, used in data):
        plot.notes.append(
            "Left out: no passed or failed episode has submitted probabilities to read."
        )
        return plot
    plot.notes.append(
        f"Up to {RELIABILITY_CAP} episodes per group; labels regenerated from each run's settings."
    )
    fig = _figure(7, 6 + 0.2 * len(groups))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    missing = [group.label for group, *_, used in data if not used]
    if missing:
        plot.notes.append(f"No submitted probabilities to show for {'; '.join(missing)}.")
    for group, p, y, used in data:
        if not used:
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
        ax.plot(xs, ys, marker="o", label=f"{group.label} (ECE {ece:.3f} {DOWN}, {used} episodes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency of target = 1")
    # below the axes: inside, it hides the curves' top right where the probabilities are high
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    plot.png = _png(fig)
    return plot


Value = Callable[[RunDir, EpisodeRecord], float | None]


def _per_episode(ax: Any, groups: Sequence[Group], value: Value, xlabel: str) -> set[str]:
    """One jittered dot per episode; returns the outcomes drawn (for the legend)."""
    rng = np.random.default_rng(1)
    drawn: set[str] = set()
    for y, group in enumerate(groups):
        for outcome, color in COLORS.items():
            xs = [
                v
                for loaded in group.runs
                for r in loaded.records
                if r.outcome == outcome and (v := value(loaded.run, r)) is not None
            ]
            if xs:
                drawn.add(outcome)
                ax.scatter(xs, y + rng.uniform(-0.25, 0.25, len(xs)), s=12, alpha=0.6, color=color)
    _rows(ax, [g.label for g in groups])
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return drawn


def effort_plot(groups: Sequence[Group]) -> Plot:
    """Steps and cost per episode, per group; a panel with nothing to show is left out."""
    plot = Plot("Steps and cost per episode", "steps and cost per episode")
    records = [r for g in groups for r in g.records]
    steps = {r.steps for r in records}
    panels: list[tuple[Value, str]] = []
    if len(steps) > 1:
        panels.append((lambda run, r: float(r.steps), "steps per episode"))
    elif steps:
        plot.notes.append(f"Steps left out: every episode took {plural(steps.pop(), 'step')}.")
    known = {loaded.run.path: cost_known(loaded.run) for g in groups for loaded in g.runs}

    def cost(run: RunDir, r: EpisodeRecord) -> float | None:
        return cost_of(run, r.usage, known[run.path])

    costs = [cost(loaded.run, r) for g in groups for loaded in g.runs for r in loaded.records]
    if any(c for c in costs):
        panels.append((cost, "cost ($)"))
    elif records:
        unknown = sorted(
            {lo.run.manifest.model for g in groups for lo in g.runs if not known[lo.run.path]}
        )
        why = f"no price is set for {', '.join(unknown)}" if unknown else "no episode cost anything"
        local = all(g.model.startswith("local/") for g in groups)
        plot.notes.append(
            f"Cost left out: {why}" + (" (local policies are free)." if local else ".")
        )
    if not panels:
        return plot
    fig = _figure(9 if len(panels) == 1 else 11, _height(groups))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    drawn: set[str] = set()
    for ax, (value, xlabel) in zip(axes, panels, strict=True):
        drawn |= _per_episode(ax, groups, value, xlabel)
        if xlabel.startswith("steps"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [
        Line2D([], [], ls="", marker="o", color=color, label=outcome)
        for outcome, color in COLORS.items()
        if outcome in drawn
    ]
    axes[-1].legend(handles=handles, loc="best", fontsize=8)
    plot.png = _png(fig)
    return plot


def all_plots(
    groups: Sequence[Group], summary: Sequence[dict[str, Any]], band: tuple[float, float]
) -> list[Plot]:
    """Every plot of the report, in page order (drawn or left out)."""
    return [
        score_plot(groups),
        pass_rate_plot(summary, band),
        reliability_plot(groups),
        effort_plot(groups),
    ]
