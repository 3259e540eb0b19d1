"""Running the submitted pipeline in its sandbox to gather the grader's evidence (SPEC §6)."""

from __future__ import annotations

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

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


def collect_evidence(
    session: Predictor, instance: Instance, grading: GradingSettings
) -> PipelineEvidence:
    """Ask the worker's pipeline for its predictions on the public test, on the holdout, and on
    both with each leak column shuffled, and for its fitted statistics.

    Only features go in (holdout labels never enter a worker); only numbers come back.
    """
    evidence = PipelineEvidence()
    try:
        evidence.test_proba = _checked(session.predict_proba(instance.test), len(instance.test))
        evidence.holdout_proba = _checked(
            session.predict_proba(instance.holdout), len(instance.holdout)
        )
        if grading.leak_audit:
            # Shuffle each leak column on the holdout (where it carries no label information)
            # and on the public test (where it does): a pipeline that uses the column changes
            # its predictions on one or the other.
            rng = np.random.default_rng([instance.seed, 2])
            for column in instance.leak_columns:
                for frame, store in (
                    (instance.holdout.iloc[:AUDIT_ROWS], evidence.shuffled),
                    (instance.test, evidence.shuffled_test),
                ):
                    shuffled = frame.copy()
                    shuffled[column] = rng.permutation(shuffled[column].to_numpy())
                    store[column] = _checked(session.predict_proba(shuffled), len(frame))
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
        return collect_evidence(fresh, instance, grading)


def _checked(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (n,):
        raise SandboxError(f"predict_proba returned shape {values.shape}, expected ({n},)")
    if not np.isfinite(values).all():
        raise SandboxError("predict_proba returned NaN or infinite values")
    return values
