"""Running the submitted pipeline in its sandbox to gather the grader's evidence (SPEC §6)."""

from __future__ import annotations

import secrets
from typing import Protocol

import numpy as np
import pandas as pd

from leakbench.grading.fingerprint import check_fingerprint
from leakbench.grading.grade import PipelineEvidence
from leakbench.sandbox import SandboxError, SandboxLimits, SandboxPool
from leakbench.settings import GradingSettings
from leakbench.task.generate import Instance

# Shuffle tests use the first rows of the holdout: a pipeline that uses a column changes many of
# its predictions, so 1,000 rows find it as surely as 20,000 at a fraction of the cost.
AUDIT_ROWS = 1000


class Predictor(Protocol):
    """What the audit needs of a fitted pipeline; a sandbox ``Session`` is one."""

    def predict_proba(self, frame: pd.DataFrame, timeout_s: float | None = None) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


def collect_evidence(
    session: Predictor,
    instance: Instance,
    grading: GradingSettings,
    audit_seed: int | None = None,
    call_timeout_s: float | None = None,
) -> PipelineEvidence:
    """Ask the worker's pipeline for its predictions on the public test, on the holdout, and on
    both with each leak column shuffled, and for its fitted statistics.

    Every frame goes in as one batch, its rows in random order under a fresh index: the
    pipeline answers all of them in the same call, so it cannot tell the audit's copies from the
    rows it was asked about before, and one call costs a fraction of one per frame. The random
    draws come from ``audit_seed`` (a fresh secret when not given, recorded in the evidence),
    so they are unpredictable to the agent yet reproducible afterwards. ``call_timeout_s`` is
    the time allowed for a frame the size of the holdout; the batch gets it pro rata.

    Only features go in (holdout labels never enter a worker); only numbers come back.
    """
    if audit_seed is None:
        audit_seed = secrets.randbits(53)
    evidence = PipelineEvidence(audit_seed=audit_seed)
    rng = np.random.default_rng(audit_seed)
    parts: list[tuple[str, str | None, pd.DataFrame]] = [
        ("test", None, instance.test),
        ("holdout", None, instance.holdout),
    ]
    if grading.leak_audit:
        # Shuffle each leak column on the holdout (where it carries no label information) and on
        # the public test (where it does): a pipeline that uses the column changes its
        # predictions on one or the other.
        for column in instance.leak_columns:
            for name, frame in (
                ("holdout", instance.holdout.iloc[:AUDIT_ROWS]),
                ("test", instance.test),
            ):
                shuffled = frame.copy()
                # By position, keeping the column's dtype (a categorical stays categorical).
                moved = frame[column].iloc[rng.permutation(len(frame))]
                shuffled[column] = moved.set_axis(frame.index)
                parts.append((name, column, shuffled))
    batch = pd.concat([frame for _, _, frame in parts], ignore_index=True)
    order = rng.permutation(len(batch))
    timeout_s = None
    if call_timeout_s is not None:
        timeout_s = call_timeout_s * max(1.0, len(batch) / max(len(instance.holdout), 1))
    try:
        answered = _checked(
            session.predict_proba(batch.take(order).reset_index(drop=True), timeout_s), len(batch)
        )
        values = np.empty(len(batch))
        values[order] = answered
        start = 0
        for name, column, frame in parts:
            chunk, start = values[start : start + len(frame)], start + len(frame)
            if column is None:
                if name == "test":
                    evidence.test_proba = chunk
                else:
                    evidence.holdout_proba = chunk
            else:
                (evidence.shuffled if name == "holdout" else evidence.shuffled_test)[column] = chunk
        if grading.fingerprint:
            evidence.fingerprint_reasons = check_fingerprint(
                session.fingerprint(), instance.train, instance.test
            )
    except SandboxError as exc:
        evidence.problem = str(exc)
    return evidence


class PipelineLoadError(Exception):
    """The pickled pipeline could not be loaded in a worker (the message says why)."""


def evidence_in_fresh_worker(
    pool: SandboxPool,
    instance: Instance,
    limits: SandboxLimits,
    pipeline: bytes,
    grading: GradingSettings,
) -> PipelineEvidence:
    """Unpickle the pipeline in a fresh worker and collect the evidence there.

    Never in a worker that ran agent code: that code could have changed how the worker answers
    the grader. The harness itself never unpickles it.
    """
    with pool.open(instance.train, instance.test, limits) as fresh:
        try:
            fresh.load_pipeline(pipeline)
        except SandboxError as exc:
            raise PipelineLoadError(str(exc)) from None
        return collect_evidence(fresh, instance, grading, call_timeout_s=limits.call_timeout_s)


def _checked(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (n,):
        raise SandboxError(f"predict_proba returned shape {values.shape}, expected ({n},)")
    if not np.isfinite(values).all():
        raise SandboxError("predict_proba returned NaN or infinite values")
    return values
