"""Scores of submitted probabilities against binary labels.

Written with numpy, as scikit-learn defines them (``roc_auc_score``, ``brier_score_loss``,
``log_loss``; ``tests/test_grading.py`` checks each against scikit-learn): the harness then
never imports scikit-learn, which takes seconds at start-up, and an AUROC costs well under a
millisecond instead of scikit-learn's input validation (about 17 ms a call).
"""

from __future__ import annotations

import math

import numpy as np

from leakbench.stats import auroc as _auroc


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return _auroc(y, p)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    return float(np.mean((p - y) ** 2))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    # Clipped as scikit-learn clips (machine epsilon), so a confident miss costs a lot, not inf.
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins of [0, 1] (sklearn has no ECE).

    The weighted mean over bins of |observed rate - mean predicted probability|; 1.0 falls in
    the last bin.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    filled = counts > 0
    gaps = np.abs(observed[filled] - predicted[filled])  # = count * |rate - mean p|
    return float(gaps.sum() / len(p))


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC estimate (Hanley & McNeil, Radiology 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))
