"""Scores of submitted probabilities against labels. sklearn where it has the metric."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(brier_score_loss(y, p))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    # sklearn clips probabilities of exactly 0 or 1, so a confident miss costs a lot, not inf.
    return float(log_loss(y, p, labels=[0, 1]))


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
