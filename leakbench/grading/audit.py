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
    measured: set[str] = set()
    evidence = PipelineEvidence(audit_seed=audit_seed, measured=measured)
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
        shuffled_batch = batch.take(order).reset_index(drop=True)
        answered = _checked(session.predict_proba(shuffled_batch, timeout_s), len(batch))
        # The same batch again: a deterministic pipeline answers it identically, and only then
        # can a change in its answers be put down to a shuffled leak column.
        again = _checked(session.predict_proba(shuffled_batch, timeout_s), len(batch))
        evidence.repeat_max_abs_diff = float(np.max(np.abs(again - answered)))
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
        if grading.leak_audit:
            measured.add("leak_audit")
        if grading.fingerprint:
            evidence.fingerprint_reasons = check_fingerprint(
                session.fingerprint(), instance.train, instance.test
            )
            measured.add("fingerprint")
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
    """Unpickle the pipeline in a fresh worker and collect the evidence there; then refit its
    recipe in another clean worker (``grading.refit_check``).

    Never in a worker that ran agent code: that code could have changed how the worker answers
    the grader. The harness itself never unpickles the pipeline or its recipe.
    """
    recipe: tuple[bytes, list[str]] | None = None
    with pool.open(instance.train, instance.test, limits) as fresh:
        try:
            fresh.load_pipeline(pipeline)
        except SandboxError as exc:
            raise PipelineLoadError(str(exc)) from None
        evidence = collect_evidence(fresh, instance, grading, call_timeout_s=limits.call_timeout_s)
        if grading.refit_check and evidence.problem is None:
            if evidence.measured is not None:
                evidence.measured.add("refit_check")
            try:
                recipe = fresh.recipe()
            except SandboxError as exc:
                evidence.refit_problem = str(exc)
    if recipe is not None:
        refit_in_clean_worker(pool, instance, limits, recipe, grading, evidence)
    return evidence


def refit_in_clean_worker(
    pool: SandboxPool,
    instance: Instance,
    limits: SandboxLimits,
    recipe: tuple[bytes, list[str]],
    grading: GradingSettings,
    evidence: PipelineEvidence,
) -> None:
    """Judge the recipe's bytes, then fit it on train_df alone in a worker that holds nothing
    else (no test rows, no submitted pipeline), on the real labels and on permuted ones.

    The recipe comes from a worker that ran the agent's code, so the harness reads its pickle
    without executing it (``inspect_recipe``) before any worker loads it: learned state carried
    in it is refused, and what is left can only learn from the training rows it is given. The
    refit predicts the first ``AUDIT_ROWS`` holdout rows and the public test rows with their
    leak columns replaced by label-free holdout values, so a recipe that learns from the leak
    columns of the rows it predicts gains nothing here that it could show on the holdout.
    """
    from leakbench.grading.recipe import inspect_recipe

    data, columns = recipe
    evidence.recipe_reasons = inspect_recipe(data)
    if evidence.recipe_reasons:
        return  # never load a recipe that carries state, not even in a clean worker
    rng = np.random.default_rng([evidence.audit_seed or 0, 2])
    holdout = instance.holdout.iloc[:AUDIT_ROWS]
    test = instance.test.copy()
    for column in instance.leak_columns:
        picked = rng.integers(0, len(instance.holdout), len(test))
        test[column] = instance.holdout[column].iloc[picked].set_axis(test.index)
    frame = pd.concat([holdout, test], ignore_index=True)
    order = rng.permutation(len(frame))
    timeout_s = limits.call_timeout_s * (1 + grading.label_permutations)
    # A worker that cannot be started is the machine's fault (the episode ends in error); what
    # happens once the recipe is in it is the recipe's.
    with pool.open(instance.train, instance.test.iloc[:0], limits) as clean:
        try:
            refit, permuted = clean.refit(
                data,
                columns,
                frame.take(order).reset_index(drop=True),
                holdout,
                grading.label_permutations,
                int(rng.integers(0, 2**53)),
                timeout_s,
            )
        except SandboxError as exc:
            evidence.refit_problem = str(exc)
            return
    values = np.empty(len(frame))
    values[order] = refit
    evidence.refit_holdout, evidence.refit_test = values[: len(holdout)], values[len(holdout) :]
    evidence.permuted_holdout = permuted


def _checked(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (n,):
        raise SandboxError(f"predict_proba returned shape {values.shape}, expected ({n},)")
    if not np.isfinite(values).all():
        raise SandboxError("predict_proba returned NaN or infinite values")
    return values
