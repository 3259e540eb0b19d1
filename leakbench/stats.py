"""Small statistics shared by the run summary, calibration and reports."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from leakbench.store.runs import EpisodeRecord


def _clamp(low: float, high: float) -> tuple[float, float]:
    # Rounding can leave a bound a hair outside [0, 1] (a 0% group's lower bound came out as
    # 2.8e-17), which then turns into a negative error bar in a plot.
    return min(1.0, max(0.0, float(low))), min(1.0, max(0.0, float(high)))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, within [0, 1]; (0, 1) with no data.

    Whole counts go to ``scipy.stats.binomtest``. A fractional ``successes`` (calibration asks
    what a rate would give at another number of episodes) goes to :func:`wilson_interval_at_rate`.
    """
    if n <= 0:
        return 0.0, 1.0
    if isinstance(successes, float) and not successes.is_integer():
        return wilson_interval_at_rate(successes / n, n, confidence)
    # Imported here: scipy.stats takes seconds to import, and `leakbench run` imports this
    # module at start-up but needs an interval only once its episodes are done.
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return _clamp(ci.low, ci.high)


def wilson_interval_at_rate(rate: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson interval a proportion ``rate`` would have after ``n`` trials, within [0, 1].

    For planning only ("how many episodes until the interval fits the band"), where
    ``rate * n`` need not be whole: ``binomtest`` takes whole counts, so this is the closed
    form scipy uses, and it equals :func:`wilson_interval` wherever ``rate * n`` is whole.
    """
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return _clamp(centre - half, centre + half)


@dataclass(frozen=True)
class PassRate:
    """passed / (episodes − errors): infrastructure errors count neither way."""

    passed: int
    graded: int

    @property
    def rate(self) -> float | None:
        return self.passed / self.graded if self.graded else None

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval (reported as ``pass_rate_low`` and ``pass_rate_high``)."""
        return wilson_interval(self.passed, self.graded)


def pass_rate(records: Iterable[EpisodeRecord]) -> PassRate:
    graded = [r for r in records if r.outcome != "error"]
    return PassRate(sum(r.passed for r in graded), len(graded))


def auroc(y: Iterable[int] | np.ndarray, score: Iterable[float] | np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U of the scores of positives against
    negatives over n_pos * n_neg, ties counted half (average ranks), as
    ``sklearn.metrics.roc_auc_score`` defines it. ``ValueError`` unless both classes occur."""
    labels = np.asarray(y).astype(bool)
    values = np.asarray(score, dtype=float)
    if labels.shape != values.shape or labels.ndim != 1:
        raise ValueError("auroc needs two 1-D arrays of the same length")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("only one class is present: AUROC is not defined")
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1))
    ends = np.append(starts[1:], len(ordered))
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based, ties averaged
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
