"""The verdict on one submission: metrics, leak checks, pass or fail, and every reason why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from leakbench.grading import metrics as m
from leakbench.grading.submission import InvalidSubmission, validate_probabilities
from leakbench.settings import LOWER_IS_BETTER, GradingSettings
from leakbench.task.generate import Instance

GRADE_SCHEMA_VERSION = 1


@dataclass
class PipelineEvidence:
    """What the submitted pipeline did when the grader ran it in a sandbox."""

    test_proba: np.ndarray | None = None  # re-predicted public test (consistency check)
    holdout_proba: np.ndarray | None = None
    shuffled: dict[str, np.ndarray] = field(default_factory=dict)  # leak column -> holdout preds
    shuffled_test: dict[str, np.ndarray] = field(default_factory=dict)  # ... -> public test preds
    fingerprint_reasons: list[str] = field(default_factory=list)
    problem: str | None = None  # why the pipeline could not be (fully) evaluated
    audit_seed: int | None = None  # the audit's random draws (shuffles, row order)


class Grade(BaseModel):
    """``grade.json``: the verdict and the evidence for it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = GRADE_SCHEMA_VERSION
    outcome: Literal["passed", "failed", "invalid", "no_submission"]
    passed: bool
    metric: str
    score: float | None
    threshold: float
    lower_is_better: bool
    metrics: dict[str, float | None]
    reasons: list[str]
    leaks_detected: list[str]
    checks: dict[str, Any]
    # Every check but the score's own threshold passed: whether a different threshold alone
    # could change the verdict (what calibration needs; never parsed out of ``reasons``).
    gates_passed: bool = False


def score_passes(score: float | None, threshold: float, lower_is_better: bool) -> bool:
    """Whether a score meets the threshold in its metric's direction (no score never does)."""
    if score is None or not math.isfinite(score):
        return False
    return score <= threshold if lower_is_better else score >= threshold


def invalid_grade(
    grading: GradingSettings, reason: str, outcome: Literal["invalid", "no_submission"] = "invalid"
) -> Grade:
    """The grade of an episode without a valid submission."""
    return Grade(
        outcome=outcome,
        passed=False,
        metric=grading.metric,
        score=None,
        threshold=grading.threshold,
        lower_is_better=grading.metric in LOWER_IS_BETTER,
        metrics={},
        reasons=[reason],
        leaks_detected=[],
        checks={},
    )


def grade(
    instance: Instance,
    proba: Any,
    grading: GradingSettings,
    evidence: PipelineEvidence | None = None,
) -> Grade:
    """Grade submitted probabilities for ``instance.test`` (and the pipeline's evidence).

    Two steps: measure (metrics and the numbers behind every check, saved in ``grade.json``),
    then decide (``verdict``), so a run can be re-graded under new settings without running
    anything again.
    """
    try:
        p = validate_probabilities(proba, len(instance.y_test))
    except InvalidSubmission as exc:
        return invalid_grade(grading, f"invalid submission: {exc.message}")
    y = instance.y_test
    metrics: dict[str, float | None] = {
        "auroc": m.auroc(y, p),
        "brier": m.brier(y, p),
        "log_loss": m.logloss(y, p),
        "ece": m.ece(y, p, grading.ece_bins),
        "oracle_auroc": instance.oracle_auroc,
    }
    metrics["regret"] = instance.oracle_auroc - metrics["auroc"]
    checks: dict[str, Any] = {"ceiling": _ceiling(instance, metrics["auroc"]), "pipeline": False}
    if evidence is not None:
        _measure_pipeline(instance, p, evidence, metrics, checks)
    return verdict(metrics, checks, grading)


def verdict(
    metrics: dict[str, float | None], checks: dict[str, Any], grading: GradingSettings
) -> Grade:
    """Pass or fail, with every reason, from measured metrics and checks."""
    reasons: list[str] = []
    leaks: list[str] = []
    if grading.require_pipeline and not checks.get("pipeline"):
        reasons.append("a fitted pipeline is required: submit {'pipeline': pipe, ...}")
    if checks.get("pipeline_problem"):
        reasons.append(
            f"the submitted pipeline could not be evaluated: {checks['pipeline_problem']}"
        )
    gap = checks.get("consistency_max_abs_diff")
    if gap is not None and gap > grading.consistency_tolerance:
        reasons.append(
            "the pipeline does not reproduce the submitted probabilities on test_df "
            f"(largest difference {gap:.3g}; each row's prediction must depend on that row "
            "alone)"
        )
    if grading.leak_audit:
        for column, change in checks.get("leak_audit", {}).items():
            if change > grading.leak_tolerance:
                leaks.append(column)
                reasons.append(
                    f"uses leak column {column}: shuffling it changes the pipeline's "
                    f"predictions by up to {change:.3g}"
                )
    if grading.fingerprint:
        reasons += [f"preprocessing fit on test rows: {r}" for r in checks.get("fingerprint", [])]
    ceiling = checks.get("ceiling")
    if grading.ceiling_check and ceiling and ceiling["z"] > grading.ceiling_z:
        sigmas = "infinitely many" if ceiling["se"] == 0 else f"{ceiling['z']:.1f}"
        reasons.append(
            f"AUROC {metrics['auroc']:.4f} is above the Bayes ceiling: the oracle scores "
            f"{metrics['oracle_auroc']:.4f} on the same rows, and {ceiling['excess']:.4f} more "
            f"is {sigmas} standard errors (over {grading.ceiling_z:g}); only label information "
            "leaking into the features can do that"
        )
    ece = metrics.get("ece")
    if grading.max_ece is not None and ece is not None and ece > grading.max_ece:
        reasons.append(f"ECE {ece:.4f} is above max_ece {grading.max_ece}")
    gates_passed = not reasons
    lower = grading.metric in LOWER_IS_BETTER
    score = metrics.get(grading.metric)
    if score is None:
        reasons.append(f"no {grading.metric} score: it needs a pipeline that predicts the holdout")
    elif not score_passes(score, grading.threshold, lower):
        op = ">" if lower else "<"
        reasons.append(f"{grading.metric} {score:.4f} {op} threshold {grading.threshold:.4f}")
    passed = not reasons
    return Grade(
        outcome="passed" if passed else "failed",
        passed=passed,
        metric=grading.metric,
        score=score,
        threshold=grading.threshold,
        lower_is_better=lower,
        metrics=metrics,
        reasons=reasons,
        leaks_detected=leaks,
        checks=checks,
        gates_passed=gates_passed and score is not None,
    )


def regrade(previous: Grade, grading: GradingSettings) -> Grade:
    """The same measurements judged under other grading settings (e.g. a new threshold)."""
    if previous.outcome in ("invalid", "no_submission"):
        return previous.model_copy(
            update={
                "metric": grading.metric,
                "threshold": grading.threshold,
                "lower_is_better": grading.metric in LOWER_IS_BETTER,
            }
        )
    return verdict(dict(previous.metrics), dict(previous.checks), grading)


def _ceiling(instance: Instance, auc: float) -> dict[str, float]:
    # No honest model ranks better than the Bayes-optimal one except by sampling luck, which the
    # Hanley-McNeil standard error of the submitted AUROC bounds; far above the oracle on the
    # same rows, label information must have leaked into the features. (The SE is taken at the
    # submitted AUROC: at the oracle's it can exceed 1 - oracle, letting a perfect score through.)
    y = instance.y_test
    n_pos = int(y.sum())
    se = m.hanley_mcneil_se(auc, n_pos, len(y) - n_pos)
    excess = auc - instance.oracle_auroc
    z = excess / se if se > 0 else (1e9 if excess > 0 else 0.0)
    return {"se": se, "excess": excess, "z": min(z, 1e9)}


def _measure_pipeline(
    instance: Instance,
    p: np.ndarray,
    evidence: PipelineEvidence,
    metrics: dict[str, float | None],
    checks: dict[str, Any],
) -> None:
    checks["pipeline"] = True
    checks["pipeline_problem"] = evidence.problem
    if evidence.audit_seed is not None:
        checks["audit_seed"] = evidence.audit_seed
    if evidence.test_proba is not None:
        checks["consistency_max_abs_diff"] = float(np.max(np.abs(evidence.test_proba - p)))
    if evidence.holdout_proba is not None:
        hp = evidence.holdout_proba
        metrics["holdout_auroc"] = m.auroc(instance.y_holdout, hp)
        metrics["holdout_oracle_auroc"] = instance.holdout_oracle_auroc
        metrics["holdout_regret"] = instance.holdout_oracle_auroc - metrics["holdout_auroc"]
        metrics["holdout_brier"] = m.brier(instance.y_holdout, hp)
        # shuffled holdout predictions cover the first rows of the holdout (AUDIT_ROWS)
        audit = {c: float(np.max(np.abs(v - hp[: len(v)]))) for c, v in evidence.shuffled.items()}
        if evidence.test_proba is not None:
            tp = evidence.test_proba
            for column, shuffled in evidence.shuffled_test.items():
                audit[column] = max(audit.get(column, 0.0), float(np.max(np.abs(shuffled - tp))))
        checks["leak_audit"] = audit
    checks["fingerprint"] = list(evidence.fingerprint_reasons)
