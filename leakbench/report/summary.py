"""Summaries over runs: read manifests and ``episodes.jsonl`` only, group, aggregate.

Rows are flat dicts of plain values (str, int, float, None), so every format (table, markdown,
CSV, JSON) shows the same numbers; leak detections are flattened to ``leaks.<column>`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakbench.errors import LeakbenchError
from leakbench.stats import pass_rate
from leakbench.store.runs import EpisodeRecord, RunDir, find_run, list_runs

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
    """The runs of one model on one preset, graded with one metric."""

    model: str
    preset: str
    metric: str
    runs: list[LoadedRun]

    @property
    def records(self) -> list[EpisodeRecord]:
        return [r for run in self.runs for r in run.records]

    @property
    def label(self) -> str:
        return f"{self.model} · {self.preset}"


def load_runs(results_dir: Path, run_ids: Sequence[str] = ()) -> list[LoadedRun]:
    """The selected runs (default: all in ``results_dir``) with their episode records."""
    if run_ids:
        paths = [find_run(results_dir, r) for r in run_ids]
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


def group_runs(runs: Sequence[LoadedRun]) -> list[Group]:
    """Group by (model, preset, metric), in order of first appearance.

    A run's records normally share one metric; one re-graded under another metric is split.
    """
    groups: dict[tuple[str, str, str], Group] = {}
    for loaded in runs:
        manifest = loaded.run.manifest
        by_metric: dict[str, list[EpisodeRecord]] = {}
        for record in loaded.records:
            by_metric.setdefault(record.metric, []).append(record)
        if not by_metric:
            by_metric[""] = []
        for metric, records in by_metric.items():
            key = (manifest.model, manifest.preset, metric)
            group = groups.setdefault(key, Group(*key, runs=[]))
            group.runs.append(LoadedRun(loaded.run, records))
    return list(groups.values())


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
    thresholds = sorted({r.threshold for r in records})
    steps_mean, _ = _mean_sd([float(r.steps) for r in records])
    tokens_in, tokens_out = _usage(records, "input_tokens"), _usage(records, "output_tokens")
    public = sum(run.run.manifest.public_seeds for run in group.runs)
    row: dict[str, Any] = {
        "model": group.model,
        "preset": group.preset,
        "metric": group.metric,
        "threshold": thresholds[0] if len(thresholds) == 1 else None,
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
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "tokens": int(tokens_in + tokens_out),
            "cache_read_tokens": int(_usage(records, "cache_read_tokens")),
            "cache_write_tokens": int(_usage(records, "cache_write_tokens")),
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
                    "tokens": int(
                        (r.usage.get("input_tokens") or 0) + (r.usage.get("output_tokens") or 0)
                    ),
                    "cost_usd": float(r.usage.get("cost_usd") or 0.0),
                    "wall_s": r.wall_s,
                    "leaks": ";".join(r.leaks_detected),
                    "reasons": "; ".join(r.reasons),
                }
            )
    return rows
