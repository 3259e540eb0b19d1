"""Threshold calibration (SPEC §7): a quantile of the graded scores, with honest statistics.

The rule, for quantile ``q`` of the ``n`` scores sorted ascending (``s[0] <= ... <= s[n-1]``):

- higher is better (``auroc``, ``holdout_auroc``): threshold = ``numpy.quantile(s, q,
  method="higher")`` = ``s[ceil(q·(n-1))]``; an episode passes when ``score >= threshold``;
- lower is better (``holdout_regret``): threshold = ``numpy.quantile(s, 1-q, method="lower")``
  = ``s[floor((1-q)·(n-1))]``; an episode passes when ``score <= threshold``.

The threshold is always one of the observed scores, so the implied pass rate is exact: it is
recomputed on the same episodes, and an episode that failed for another reason (a leak, a missing
pipeline, ECE) still fails. Pass rate = passes / (episodes - errors), as everywhere in leakbench;
invalid and no-submission episodes have no score, so they are left out of the quantile's sample
but count as failures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from leakbench import __version__
from leakbench.agents import canonical_model
from leakbench.errors import LeakbenchError, UsageError
from leakbench.grading.grade import score_passes
from leakbench.settings import CalibrationRecord
from leakbench.stats import wilson_interval, wilson_interval_at_rate
from leakbench.store.files import write_atomic
from leakbench.store.runs import EpisodeRecord, RunDir, find_run, list_runs

MIN_EPISODES = 20  # below this a calibration is flagged: the interval is too wide to act on
_RUNS_NEEDED_LIMIT = 10_000_000


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and what it implies on the episodes it came from."""

    runs: list[str]
    models: list[str]
    metric: str
    lower_is_better: bool
    quantile: float
    band: tuple[float, float]
    episodes: int  # every record read
    errors: int
    invalid: int
    no_submission: int
    unscored: int  # graded but without a score (e.g. no pipeline for a holdout metric)
    used: int  # episodes - errors: the pass-rate denominator
    scored: int  # the quantile's sample
    threshold: float
    passed: int
    pass_rate: float | None
    interval: tuple[float, float]
    in_band: bool
    runs_needed: int | None  # None: never, the rate is outside the band
    confidence: float = 0.95
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def enough(self) -> bool:
        return self.used >= MIN_EPISODES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["band"] = list(self.band)
        # One name for the interval in every file leakbench writes (reports, run summary).
        del data["interval"]
        data["pass_rate_low"], data["pass_rate_high"] = self.interval
        data["rule"] = describe_rule(self.metric, self.lower_is_better, self.quantile)
        return data

    def record(self) -> CalibrationRecord:
        return CalibrationRecord(
            source_runs=self.runs,
            models=self.models,
            metric=self.metric,
            lower_is_better=self.lower_is_better,
            threshold=self.threshold,
            quantile=self.quantile,
            episodes=self.used,
            scored=self.scored,
            implied_pass_rate=self.pass_rate,
            interval=self.interval,
            band=self.band,
            in_band=self.in_band,
            runs_needed=self.runs_needed,
            date=self.date,
            leakbench_version=__version__,
        )


def describe_rule(metric: str, lower_is_better: bool, quantile: float) -> str:
    if lower_is_better:
        return (
            f"threshold = {1 - quantile:.4g} quantile of {metric} (numpy method 'lower'); "
            f"pass: {metric} <= threshold"
        )
    return (
        f"threshold = {quantile:.4g} quantile of {metric} (numpy method 'higher'); "
        f"pass: {metric} >= threshold"
    )


def threshold_at(scores: Sequence[float], quantile: float, lower_is_better: bool) -> float:
    """The threshold at ``quantile``, always an observed score (see the module docstring)."""
    if not len(scores):
        raise ValueError("no scores")
    values = np.asarray(scores, dtype=float)
    if lower_is_better:
        return float(np.quantile(values, 1 - quantile, method="lower"))
    return float(np.quantile(values, quantile, method="higher"))


def would_pass(record: EpisodeRecord, threshold: float) -> bool:
    """Whether the episode passes under ``threshold``, every other gate unchanged."""
    if record.outcome not in ("passed", "failed") or not record.gates_passed:
        return False
    return score_passes(record.score, threshold, record.lower_is_better)


def interval_in_band(interval: tuple[float, float], band: tuple[float, float]) -> bool:
    return band[0] <= interval[0] and interval[1] <= band[1]


def _interval_at_rate(rate: float, n: int, confidence: float) -> tuple[float, float]:
    # The Wilson formula only needs the proportion: successes may be fractional here.
    return wilson_interval_at_rate(rate, n, confidence)


def runs_needed(
    rate: float | None, band: tuple[float, float], confidence: float = 0.95
) -> int | None:
    """Smallest n whose Wilson interval at the observed ``rate`` lies inside ``band``.

    None ("never") when the rate is not strictly inside the band: the interval always straddles
    its own centre. The interval narrows as n grows, so doubling then bisection finds it.
    """
    if rate is None or not band[0] < rate < band[1]:
        return None

    def fits(n: int) -> bool:
        return interval_in_band(_interval_at_rate(rate, n, confidence), band)

    high = 1
    while not fits(high):
        high *= 2
        if high > _RUNS_NEEDED_LIMIT:
            return None
    low = high // 2  # does not fit (or is 0)
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


def calibrate(
    runs: Sequence[tuple[str, Sequence[EpisodeRecord]]],
    quantile: float,
    band: tuple[float, float],
    confidence: float = 0.95,
) -> Calibration:
    """Choose the threshold at ``quantile`` of the runs' scores and judge what it implies."""
    records = [r for _, recs in runs for r in recs]
    metrics = sorted({(r.metric, r.lower_is_better) for r in records})
    if len(metrics) > 1:
        by_metric: dict[str, list[str]] = {}
        for run_id, recs in runs:
            for name in sorted({r.metric for r in recs}):
                by_metric.setdefault(name, []).append(run_id)
        listed = "; ".join(f"{m}: {', '.join(ids)}" for m, ids in by_metric.items())
        raise UsageError(
            f"the runs were graded with different metrics ({listed})",
            hint="calibrate runs of one metric at a time with --run, or re-grade them",
        )
    if not records:
        raise LeakbenchError("no finished episodes in the selected runs")
    metric, lower = metrics[0]
    graded = [r for r in records if r.outcome != "error"]
    scores = [
        r.score
        for r in graded
        if r.outcome in ("passed", "failed") and r.score is not None and math.isfinite(r.score)
    ]
    if not scores:
        raise LeakbenchError(
            f"no scored episodes among {len(records)} (every one is an error, invalid or "
            "unsubmitted): nothing to calibrate on"
        )
    threshold = threshold_at(scores, quantile, lower)
    passed = sum(would_pass(r, threshold) for r in graded)
    rate = passed / len(graded)
    interval = wilson_interval(passed, len(graded), confidence)
    counts = {o: sum(r.outcome == o for r in records) for o in ("error", "invalid")}
    return Calibration(
        runs=[run_id for run_id, _ in runs],
        models=sorted({r.model for r in records}),
        metric=metric,
        lower_is_better=lower,
        quantile=quantile,
        band=(float(band[0]), float(band[1])),
        episodes=len(records),
        errors=counts["error"],
        invalid=counts["invalid"],
        no_submission=sum(r.outcome == "no_submission" for r in records),
        unscored=sum(r.outcome in ("passed", "failed") and r.score is None for r in records),
        used=len(graded),
        scored=len(scores),
        threshold=threshold,
        passed=passed,
        pass_rate=rate,
        interval=interval,
        in_band=interval_in_band(interval, band),
        runs_needed=runs_needed(rate, band, confidence),
        confidence=confidence,
    )


def select_runs(results_dir: Path, run_ids: Sequence[str], model: str | None) -> list[RunDir]:
    """The runs named by id, or else every run of ``model`` in ``results_dir``."""
    if run_ids:
        return [RunDir.open(find_run(results_dir, r)) for r in run_ids]
    runs = [RunDir.open(p) for p in list_runs(results_dir)]
    wanted = None if model is None else canonical_model(model)
    chosen = [r for r in runs if wanted is None or canonical_model(r.manifest.model) == wanted]
    if not chosen:
        raise LeakbenchError(
            f"no runs of {model} in {results_dir}",
            hint=f"make some with `leakbench calibrate --model {model} --runs 20`, or pick --run",
        )
    return chosen


def calibrate_runs(
    runs: Sequence[RunDir], quantile: float, band: tuple[float, float]
) -> Calibration:
    return calibrate([(r.run_id, r.records()) for r in runs], quantile, band)


def calibration_toml(calibration: Calibration) -> str:
    """A settings file that sets the threshold (and its metric) and records where it came from."""
    record = calibration.record().model_dump(mode="json", exclude_none=True)
    grading = {"metric": calibration.metric, "threshold": calibration.threshold}
    header = (
        f"# Written by `leakbench calibrate` on {calibration.date}; load it with --config.\n"
        f"# {describe_rule(calibration.metric, calibration.lower_is_better, calibration.quantile)}"
        "\n\n"
    )
    return header + tomli_w.dumps({"grading": grading, "calibration": record})


def write_calibration(path: Path, calibration: Calibration) -> None:
    write_atomic(Path(path), calibration_toml(calibration))
