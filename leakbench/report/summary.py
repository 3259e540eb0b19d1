"""Summaries over runs: read manifests and ``episodes.jsonl``, group, aggregate.

Rows are flat dicts of plain values (str, int, float, None), so every format (table, markdown,
CSV, JSON) shows the same numbers; leak detections are flattened to ``leaks.<column>`` keys.
The HTML report's breakdowns (why episodes failed, which kinds of leak were caught) are here
too; only the leak kinds read further, from the episodes' ``instance.json``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError, UsageError
from leakbench.stats import pass_rate
from leakbench.store.runs import EpisodeRecord, RunDir, list_runs

LEAK_PREFIX = "leaks."


@dataclass
class LoadedRun:
    run: RunDir
    records: list[EpisodeRecord]

    @property
    def run_id(self) -> str:
        return self.run.run_id


@dataclass
class Group:
    """The runs of one model on one preset, graded with one metric at one threshold.

    Pass rates at different thresholds (or of different metrics) measure different things, so
    they are never pooled: a run re-graded in part is split over several groups.
    """

    model: str
    preset: str
    metric: str
    threshold: float | None  # None only for a group of runs with no finished episode
    runs: list[LoadedRun]

    @property
    def records(self) -> list[EpisodeRecord]:
        return [r for run in self.runs for r in run.records]

    @property
    def label(self) -> str:
        return group_label(self.model, self.preset, self.metric, self.threshold)


def group_label(model: str, preset: str, metric: str, threshold: float | None) -> str:
    """``model · preset · metric threshold``, the name of a group in plots and notes."""
    parts = [model, preset]
    if metric:
        parts.append(metric if threshold is None else f"{metric} {threshold:.4g}")
    return " · ".join(parts)


def load_runs(results_dir: Path, run_ids: Sequence[str] = ()) -> list[LoadedRun]:
    """The selected runs (default: all in ``results_dir``) with their episode records.

    Each of ``run_ids`` is a run folder, a run id, or an id prefix that selects every run whose
    id starts with it.
    """
    if run_ids:
        paths = [p for r in run_ids for p in select_runs(results_dir, r)]
    else:
        paths = list_runs(results_dir)
        if not paths:
            raise LeakbenchError(f"no runs in {results_dir}", hint="make one with `leakbench run`")
    loaded = []
    seen: set[Path] = set()
    for path in paths:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        run = RunDir.open(path)
        loaded.append(LoadedRun(run, run.records()))
    return loaded


def select_runs(results_dir: Path, run: str) -> list[Path]:
    """The run folders ``run`` names: a folder, an exact id, or every id that starts with it.

    Unlike ``find_run`` (which ``run --resume`` needs to name exactly one run), a prefix
    matching several runs selects them all, in id order.
    """
    for exact in (Path(run), Path(results_dir) / run):
        if run and (exact / "manifest.json").is_file():
            return [exact]
    matches = [p for p in list_runs(results_dir) if p.name.startswith(run)] if run else []
    if not matches:
        raise UsageError(
            f"no run '{run}' in {results_dir}", hint="list runs with `leakbench report`"
        )
    return matches


def group_runs(runs: Sequence[LoadedRun]) -> list[Group]:
    """Group by (model, preset, metric, threshold), in order of first appearance."""
    groups: dict[tuple[str, str, str, float | None], Group] = {}
    for loaded in runs:
        manifest = loaded.run.manifest
        by_grading: dict[tuple[str, float | None], list[EpisodeRecord]] = {}
        for record in loaded.records:
            by_grading.setdefault((record.metric, record.threshold), []).append(record)
        if not by_grading:
            by_grading["", None] = []
        for (metric, threshold), records in by_grading.items():
            key = (manifest.model, manifest.preset, metric, threshold)
            group = groups.setdefault(key, Group(*key, runs=[]))
            group.runs.append(LoadedRun(loaded.run, records))
    return list(groups.values())


def run_status(group: Group) -> str:
    """The runs' manifest status: ``completed``, or ``2 completed, 1 interrupted`` if mixed."""
    counts = Counter(run.run.manifest.status for run in group.runs)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _usage(records: Sequence[EpisodeRecord], key: str) -> float:
    return float(sum(r.usage.get(key, 0.0) or 0.0 for r in records))


def _tokens(records: Sequence[EpisodeRecord], key: str) -> int:
    # usage is stored as floats; a token count is shown and written as a whole number
    return round(_usage(records, key))


def leak_columns(groups: Sequence[Group]) -> list[str]:
    return sorted({c for g in groups for r in g.records for c in r.leaks_detected})


def summary_row(group: Group, leaks: Sequence[str]) -> dict[str, Any]:
    """One group's statistics, flat (see the module docstring)."""
    records = group.records
    counts = {
        o: sum(r.outcome == o for r in records)
        for o in ("passed", "failed", "invalid", "no_submission", "error")
    }
    rate = pass_rate(records)
    low, high = rate.interval
    score_mean, score_sd = _mean_sd([r.score for r in records if r.score is not None])
    auroc = [r.metrics.get("auroc") for r in records if r.outcome in ("passed", "failed")]
    auroc_mean, auroc_sd = _mean_sd([a for a in auroc if a is not None])
    regret_mean, _ = _mean_sd(
        [g for g in (r.metrics.get("regret") for r in records) if g is not None]
    )
    steps_mean, _ = _mean_sd([float(r.steps) for r in records])
    tokens_in, tokens_out = _tokens(records, "input_tokens"), _tokens(records, "output_tokens")
    public = sum(run.run.manifest.public_seeds for run in group.runs)
    row: dict[str, Any] = {
        "model": group.model,
        "preset": group.preset,
        "metric": group.metric,
        "threshold": group.threshold,
        "run_status": run_status(group),
        "runs": len(group.runs),
        # runs on public seeds (task.public_seeds): anyone could regenerate their labels
        "public_seed_runs": public,
        "tamper_proof": public == 0,
        "episodes": len(records),
        "passed": rate.passed,
        "failed": counts["failed"],
        "invalid": counts["invalid"],
        "no_submission": counts["no_submission"],
        "error": counts["error"],
        "graded": rate.graded,  # episodes - error: the pass rate's denominator
        "pass_rate": rate.rate,
        "pass_rate_low": low if rate.graded else None,
        "pass_rate_high": high if rate.graded else None,
        "score_mean": score_mean,
        "score_sd": score_sd,
        "auroc_mean": auroc_mean,
        "auroc_sd": auroc_sd,
        "regret_mean": regret_mean,
        "leaks_any": sum(bool(r.leaks_detected) for r in records),
    }
    for column in leaks:
        row[LEAK_PREFIX + column] = sum(column in r.leaks_detected for r in records)
    row.update(
        {
            "steps_mean": steps_mean,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "tokens": tokens_in + tokens_out,
            "cache_read_tokens": _tokens(records, "cache_read_tokens"),
            "cache_write_tokens": _tokens(records, "cache_write_tokens"),
            "cost_usd": _usage(records, "cost_usd"),
            "wall_s": float(sum(run.run.manifest.wall_s for run in group.runs)),
            "episode_wall_s_mean": _mean_sd([r.wall_s for r in records])[0],
        }
    )
    return row


def summary_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    leaks = leak_columns(groups)
    return [summary_row(g, leaks) for g in groups]


def episode_rows(runs: Sequence[LoadedRun]) -> list[dict[str, Any]]:
    """One flat row per episode."""
    rows = []
    for loaded in runs:
        manifest = loaded.run.manifest
        for r in loaded.records:
            rows.append(
                {
                    "run_id": manifest.run_id,
                    "run_status": manifest.status,
                    "model": r.model,
                    "preset": r.preset,
                    "index": r.index,
                    "seed": r.seed,
                    "tamper_proof": not manifest.public_seeds,
                    "outcome": r.outcome,
                    "metric": r.metric,
                    "score": r.score,
                    "threshold": r.threshold,
                    "steps": r.steps,
                    "tokens": _tokens([r], "input_tokens") + _tokens([r], "output_tokens"),
                    "cost_usd": float(r.usage.get("cost_usd") or 0.0),
                    "wall_s": r.wall_s,
                    "leaks": ";".join(r.leaks_detected),
                    "reasons": "; ".join(r.reasons),
                }
            )
    return rows


# Outcomes that are not a failed check of the grade, described like FAILED_CHECKS' codes.
OUTCOME_CODES = {
    "error": "infrastructure failure (API after retries, harness fault); not in the pass rate",
    "unrecorded": "failed, but the record names no check (graded before codes were kept: "
    "re-grade it)",
}
UNKNOWN_KIND = "unknown"


@dataclass
class Breakdown:
    """One row of a breakdown: a code (or leak kind) and the episodes it applies to."""

    code: str
    description: str
    episodes: list[tuple[str, int]]  # (run id, episode index), in run order
    columns: list[str] | None = None  # leak detections: the columns of this kind caught

    @property
    def count(self) -> int:
        return len(self.episodes)


def check_description(code: str) -> str:
    """What a failed-check code (``EpisodeRecord.failed_checks``) or an outcome means."""
    # grading.grade pulls in pandas and scipy: only the breakdowns need its table
    from leakbench.grading.grade import FAILED_CHECKS

    return (
        FAILED_CHECKS.get(code) or OUTCOME_CODES.get(code) or "(a code this version does not know)"
    )


def _record_codes(record: EpisodeRecord) -> list[str]:
    """The episode's failed-check codes, each once, with its outcome's own code if missing."""
    codes = list(dict.fromkeys(record.failed_checks))  # "leak" is listed once per column
    if record.outcome in ("error", "invalid", "no_submission") and record.outcome not in codes:
        codes.insert(0, record.outcome)
    if record.outcome == "failed" and not codes:
        codes.append("unrecorded")
    return codes


def failure_reasons(group: Group) -> list[Breakdown]:
    """Why the group's episodes did not pass: each failed-check code (and the outcomes error,
    invalid, no_submission) with the episodes it applies to, most common first. An episode
    with several codes counts once under each."""
    found: dict[str, list[tuple[str, int]]] = {}
    for loaded in group.runs:
        for record in loaded.records:
            for code in _record_codes(record):
                found.setdefault(code, []).append((loaded.run_id, record.index))
    rows = [Breakdown(code, check_description(code), eps) for code, eps in found.items()]
    return sorted(rows, key=lambda b: -b.count)  # stable: ties keep first appearance


def episode_leak_kinds(run: RunDir, index: int) -> dict[str, str]:
    """Leak column -> leak kind for one episode, from its ``instance.json`` (under disguised
    naming the columns differ from seed to seed); {} when it cannot be read."""
    try:
        raw = json.loads((run.episode_dir(index) / "instance.json").read_text(encoding="utf-8"))
        return {
            c["name"]: c["leak_kind"]
            for c in raw["columns"]
            if isinstance(c, dict) and isinstance(c.get("leak_kind"), str)
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _registered_kinds() -> dict[str, str]:
    from leakbench.task.leaks import LEAK_KINDS

    return {kind.column: name for name, kind in LEAK_KINDS.items()}


def leak_detections(group: Group) -> list[Breakdown]:
    """Per leak kind, the episodes whose pipeline was caught reading a column of that kind (and
    which columns), most common first. A column's kind comes from its episode's
    ``instance.json``; failing that, from the explicit column names of the registered kinds."""
    from leakbench.task.leaks import LEAK_KINDS

    fallback = _registered_kinds()
    episodes: dict[str, list[tuple[str, int]]] = {}
    columns: dict[str, list[str]] = {}
    for loaded in group.runs:
        for record in loaded.records:
            if not record.leaks_detected:
                continue
            kinds = episode_leak_kinds(loaded.run, record.index)
            seen: set[str] = set()
            for column in record.leaks_detected:
                kind = kinds.get(column) or fallback.get(column) or UNKNOWN_KIND
                if column not in columns.setdefault(kind, []):
                    columns[kind].append(column)
                if kind not in seen:
                    seen.add(kind)
                    episodes.setdefault(kind, []).append((loaded.run_id, record.index))
    rows = [
        Breakdown(
            kind,
            LEAK_KINDS[kind].description if kind in LEAK_KINDS else "kind not recorded",
            eps,
            columns[kind],
        )
        for kind, eps in episodes.items()
    ]
    return sorted(rows, key=lambda b: -b.count)


# Metrics a report shows, in this order; the direction of each for the reader's marker.
SHOWN_METRICS = (
    "auroc",
    "holdout_auroc",
    "regret",
    "holdout_regret",
    "brier",
    "holdout_brier",
    "log_loss",
    "ece",
)
_LOWER_BETTER = {"regret", "holdout_regret", "brier", "holdout_brier", "log_loss", "ece"}


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better: the grading metrics that say so
    (``settings.LOWER_IS_BETTER``), regrets, and the calibration metrics."""
    from leakbench.settings import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER or metric in _LOWER_BETTER


def metric_means(group: Group) -> dict[str, tuple[float | None, int]]:
    """Mean of each shown metric over the group's graded submissions (passed or failed), and
    how many episodes it is over; metrics no episode has are left out."""
    records = [r for r in group.records if r.outcome in ("passed", "failed")]
    out: dict[str, tuple[float | None, int]] = {}
    for name in SHOWN_METRICS:
        values = [v for r in records if (v := r.metrics.get(name)) is not None and math.isfinite(v)]
        if values:
            out[name] = (_mean_sd(values)[0], len(values))
    return out
