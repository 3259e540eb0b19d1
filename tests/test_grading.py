from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from leakbench.grading import metrics
from leakbench.grading.grade import PipelineEvidence, grade, regrade
from leakbench.grading.submission import InvalidSubmission, validate_probabilities
from leakbench.settings import GradingSettings, TaskSettings
from leakbench.task.generate import make_instance
from tests.pipelines import seed_baseline

TASK = TaskSettings(public_seeds=True)  # the original project's instances
SEED_GRADING = GradingSettings()


def _fit_predict(inst, drop_leaks: bool) -> np.ndarray:
    return seed_baseline(inst, keep_leaks=not drop_leaks).predict_proba(inst.test)[:, 1]


def test_auroc_matches_sklearn_to_1e12():
    inst = make_instance(TASK, 1, key=None)
    p = np.random.default_rng(0).random(len(inst.y_test))
    g = grade(inst, p, SEED_GRADING)
    assert abs(g.metrics["auroc"] - roc_auc_score(inst.y_test, p)) < 1e-12
    assert g.metrics["brier"] == pytest.approx(brier_score_loss(inst.y_test, p), abs=1e-12)
    assert g.metrics["regret"] == pytest.approx(inst.oracle_auroc - g.metrics["auroc"])


def test_ece_of_perfectly_calibrated_bins_is_zero_and_of_a_constant_is_the_gap():
    y = np.array([0, 1, 0, 1])
    assert metrics.ece(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    assert metrics.ece(y, np.full(4, 0.9)) == pytest.approx(0.4)


def test_hanley_mcneil_reference_value():
    # A = 0.9, 50 positives, 50 negatives: Q1 = 0.9/1.1, Q2 = 2*0.81/1.9, by hand SE = 0.03212
    assert metrics.hanley_mcneil_se(0.9, 50, 50) == pytest.approx(0.03212, abs=1e-5)
    assert metrics.hanley_mcneil_se(1.0, 50, 50) == 0.0


@pytest.mark.parametrize(
    ("payload", "code", "needle"),
    [
        ([0.5] * 199, "length", "expected 200 probabilities"),
        ([0.5] * 199 + [float("nan")], "not_finite", "NaN or infinite (first at index 199)"),
        ([0.5] * 199 + [float("inf")], "not_finite", "NaN or infinite"),
        ([0.5] * 199 + [1.5], "range", "must lie in [0, 1]"),
        (np.full((200, 2), 0.5), "shape", "predict_proba(X)[:, 1]"),
        ([0.5] * 199 + ["a"], "non_numeric", "found str 'a'"),
        ([True] * 200, "non_numeric", "found bool"),
        (None, "missing", "no probabilities"),
    ],
)
def test_each_bad_payload_has_its_own_reason(payload, code, needle):
    with pytest.raises(InvalidSubmission) as err:
        validate_probabilities(payload, 200)
    assert err.value.code == code
    assert needle in err.value.message


def test_invalid_payload_grades_invalid_with_reason():
    inst = make_instance(TASK, 1, key=None)
    g = grade(inst, [0.5] * 10, SEED_GRADING)
    assert g.outcome == "invalid" and not g.passed
    assert g.reasons == [
        "invalid submission: expected 200 probabilities (one per test_df row, in its order), got 10"
    ]


def test_require_pipeline_and_holdout_metric_without_pipeline_fail():
    inst = make_instance(TASK, 1, key=None)
    g = grade(inst, inst.oracle_test, GradingSettings(require_pipeline=True))
    assert g.outcome == "failed" and any("pipeline is required" in r for r in g.reasons)
    g = grade(inst, inst.oracle_test, GradingSettings(metric="holdout_regret", threshold=0.01))
    assert g.score is None and any("no holdout_regret score" in r for r in g.reasons)


def test_pipeline_evidence_drives_audit_consistency_and_holdout_metric():
    inst = make_instance(TASK, 1, key=None)
    hp = inst.oracle_holdout
    evidence = PipelineEvidence(
        test_proba=inst.oracle_test,
        holdout_proba=hp,
        shuffled={"leak_future_signal": hp, "leak_cat0_rate_full": np.clip(hp + 0.01, 0, 1)},
    )
    # the refit checks are not part of this evidence: off, so not required to have run
    grading = GradingSettings(metric="holdout_regret", threshold=0.001, refit_check=False)
    g = grade(inst, inst.oracle_test, grading, evidence)
    assert g.metrics["holdout_regret"] == 0.0
    assert g.leaks_detected == ["leak_cat0_rate_full"] and not g.gates_passed
    assert "uses leak column leak_cat0_rate_full" in g.reasons[0]
    evidence.shuffled = {}
    g = grade(inst, inst.oracle_test, grading, evidence)
    assert g.passed and g.gates_passed, g.reasons
    strict = GradingSettings(metric="holdout_regret", threshold=-0.01, refit_check=False)
    g = grade(inst, inst.oracle_test, strict, evidence)
    assert not g.passed and g.gates_passed  # only the score's threshold stands in the way
    g = grade(inst, np.clip(inst.oracle_test + 0.01, 0, 1), grading, evidence)
    assert not g.passed and "does not reproduce the submitted probabilities" in g.reasons[0]


@pytest.mark.slow
def test_seed_preset_baseline_oracle_and_leaky_over_200_seeds():
    baseline, oracle, passes = [], [], 0
    for seed in range(200):
        inst = make_instance(TASK, seed, key=None)
        p = _fit_predict(inst, drop_leaks=True)
        g = grade(inst, p, SEED_GRADING)
        baseline.append(g.metrics["auroc"])
        oracle.append(inst.oracle_auroc)
        passes += g.passed
        assert not any("Bayes ceiling" in r for r in g.reasons)  # honest models are not flagged
    assert np.mean(baseline) == pytest.approx(0.937, abs=0.003)
    assert np.mean(oracle) == pytest.approx(0.940, abs=0.003)
    assert 0.2 <= passes / 200 <= 0.4
    for seed in range(20):
        inst = make_instance(TASK, seed, key=None)
        g = grade(inst, _fit_predict(inst, drop_leaks=False), SEED_GRADING)
        assert g.metrics["auroc"] >= 0.99
        assert not g.passed and any("Bayes ceiling" in r for r in g.reasons)


def test_a_check_that_did_not_run_is_never_reported_clean():
    inst = make_instance(TASK, 1, key=None)
    hp = inst.oracle_holdout
    # graded with the leak audit and the refit checks off: only the fingerprint ran
    evidence = PipelineEvidence(
        test_proba=inst.oracle_test, holdout_proba=hp, measured={"fingerprint"}
    )
    off = GradingSettings(
        metric="holdout_regret", threshold=0.001, leak_audit=False, refit_check=False
    )
    g = grade(inst, inst.oracle_test, off, evidence)
    assert g.passed and g.checks["measured"] == ["fingerprint"], g.reasons
    # the same measurements judged with both on: failed as not measured, never clean
    on = GradingSettings(metric="holdout_regret", threshold=0.001)
    again = regrade(g, on)
    assert not again.passed and again.failed_checks.count("not_measured") == 2
    assert any("the leak audit did not run" in r for r in again.reasons)
    assert any("the refit checks did not run" in r for r in again.reasons)
    # a grade from before checks recorded what ran: judged by what it stored
    legacy = g.model_copy(update={"checks": {k: v for k, v in g.checks.items() if k != "measured"}})
    assert "not_measured" in regrade(legacy, on).failed_checks


@pytest.mark.parametrize("seed", range(6))
def test_numpy_metrics_equal_scikit_learns(seed):
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 3000))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = rng.random(n)
    if seed % 2:  # many ties, and the extremes 0 and 1
        p = np.round(p, 1)
        p[:3] = [0.0, 1.0, 1.0]
    assert metrics.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)


def test_auroc_of_one_class_is_refused_as_scikit_learn_does():
    with pytest.raises(ValueError, match="one class"):
        metrics.auroc(np.zeros(5), np.linspace(0, 1, 5))
