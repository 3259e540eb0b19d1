"""The grader's evidence: one batch per pipeline, rows shuffled, draws secret but recorded."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from leakbench.grading.audit import AUDIT_ROWS, collect_evidence
from leakbench.grading.grade import grade
from leakbench.settings import GradingSettings, TaskSettings
from leakbench.task.generate import make_instance
from tests.pipelines import seed_baseline

TASK = TaskSettings(public_seeds=True)


@pytest.fixture(scope="module")
def inst():
    return make_instance(TASK, 5, key=None)


class Recorder:
    """A predictor that answers from one column, row by row, and keeps every frame it saw."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.frames: list[pd.DataFrame] = []
        self.timeouts: list[float | None] = []

    def predict_proba(self, frame: pd.DataFrame, timeout_s: float | None = None) -> np.ndarray:
        self.frames.append(frame)
        self.timeouts.append(timeout_s)
        return 1 / (1 + np.exp(-frame[self.column].to_numpy(dtype=float)))

    def fingerprint(self) -> dict:
        return {}


class InProcess:
    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def predict_proba(self, frame: pd.DataFrame, timeout_s: float | None = None) -> np.ndarray:
        return self.pipe.predict_proba(frame)[:, 1]

    def fingerprint(self) -> dict:
        return {}


class Remembering(InProcess):
    """Uses the leaks, but answers every row it has seen before (by its honest features) as it
    did the first time: it defeats an audit that asks for the shuffled copies in later calls."""

    def __init__(self, pipe, keys: list[str]) -> None:
        super().__init__(pipe)
        self.keys = keys
        self.seen: dict[tuple, float] = {}

    def predict_proba(self, frame: pd.DataFrame, timeout_s: float | None = None) -> np.ndarray:
        fresh = super().predict_proba(frame)
        rows = frame[self.keys].itertuples(index=False, name=None)
        return np.array([self.seen.setdefault(k, v) for k, v in zip(rows, fresh, strict=True)])


def test_one_call_with_every_frame_in_a_shuffled_order_mapped_back(inst):
    recorder = Recorder("num_0")
    grading = GradingSettings(fingerprint=False)
    ev = collect_evidence(recorder, inst, grading, audit_seed=11, call_timeout_s=10.0)
    # One batch, asked twice (the second answer shows whether the pipeline is deterministic).
    assert len(recorder.frames) == 2
    batch = recorder.frames[0]
    pd.testing.assert_frame_equal(recorder.frames[1], batch)
    assert ev.repeat_max_abs_diff == 0.0
    k = len(inst.leak_columns)
    assert len(batch) == len(inst.test) + len(inst.holdout) + k * (AUDIT_ROWS + len(inst.test))
    # The time allowed for a holdout-sized frame, pro rata: no row has less time than before.
    assert recorder.timeouts == [pytest.approx(10.0 * len(batch) / len(inst.holdout))] * 2
    assert batch.index.equals(pd.RangeIndex(len(batch)))  # nothing says where a row came from
    assert (batch.dtypes == inst.test.dtypes).all()
    # Shuffled: the first rows are not the public test in order.
    head = batch["num_0"].to_numpy()[: len(inst.test)]
    assert not np.array_equal(head, inst.test["num_0"].to_numpy())

    def expect(frame):
        return 1 / (1 + np.exp(-frame["num_0"].to_numpy(dtype=float)))

    np.testing.assert_array_equal(ev.test_proba, expect(inst.test))
    np.testing.assert_array_equal(ev.holdout_proba, expect(inst.holdout))
    assert set(ev.shuffled) == set(ev.shuffled_test) == set(inst.leak_columns)
    for column in inst.leak_columns:  # num_0 is no leak: the shuffles do not touch it
        np.testing.assert_array_equal(ev.shuffled[column], expect(inst.holdout)[:AUDIT_ROWS])
        np.testing.assert_array_equal(ev.shuffled_test[column], expect(inst.test))


def test_the_audit_seed_is_fresh_each_time_recorded_and_reproducible(inst):
    pipe = InProcess(seed_baseline(inst, keep_leaks=True))
    grading = GradingSettings(fingerprint=False)
    a, b = collect_evidence(pipe, inst, grading), collect_evidence(pipe, inst, grading)
    assert a.audit_seed is not None and b.audit_seed is not None and a.audit_seed != b.audit_seed
    again = collect_evidence(pipe, inst, grading, audit_seed=a.audit_seed)
    for column in inst.leak_columns:
        np.testing.assert_array_equal(again.shuffled_test[column], a.shuffled_test[column])
    g = grade(inst, a.test_proba, grading, a)
    assert g.checks["audit_seed"] == a.audit_seed


def test_a_pipeline_that_remembers_rows_across_calls_still_fails(inst):
    """Asked frame by frame, it would answer the shuffled copies from memory and pass the audit;
    in one shuffled batch it cannot tell the originals from the copies."""
    pipe = seed_baseline(inst, keep_leaks=True)
    keys = [c for c in inst.test.columns if c not in inst.leak_columns]
    submitted = pipe.predict_proba(inst.test)[:, 1]
    grading = GradingSettings(ceiling_check=False)  # the mechanism itself, not the ceiling
    g = grade(inst, submitted, grading, collect_evidence(Remembering(pipe, keys), inst, grading))
    assert not g.passed
    # The consistency check sees copies answered for originals, or the audit sees the leak.
    assert g.leaks_detected or g.checks["consistency_max_abs_diff"] > grading.consistency_tolerance
    assert grade(inst, submitted, grading).passed  # the leaky scores alone would have passed


def test_an_honest_pipeline_answers_the_batch_as_it_answers_each_frame(inst):
    pipe = seed_baseline(inst, keep_leaks=False)
    ev = collect_evidence(InProcess(pipe), inst, GradingSettings(fingerprint=False))
    np.testing.assert_allclose(ev.test_proba, pipe.predict_proba(inst.test)[:, 1], atol=1e-12)
    np.testing.assert_allclose(ev.holdout_proba, pipe.predict_proba(inst.holdout)[:, 1], atol=1e-12)
    for column in inst.leak_columns:
        assert np.max(np.abs(ev.shuffled[column] - ev.holdout_proba[:AUDIT_ROWS])) < 1e-12


def test_a_categorical_leak_column_keeps_its_dtype_in_the_batch(inst):
    """Were one copy's column turned into objects, the whole batch's column would be, and the
    pipeline would see every row differently from how it saw test_df."""
    column = inst.leak_columns[0]
    dtype = pd.CategoricalDtype(sorted(set(inst.test[column]) | set(inst.holdout[column])))
    categorical = dataclasses.replace(
        inst,
        test=inst.test.astype({column: dtype}),
        holdout=inst.holdout.astype({column: dtype}),
    )
    recorder = Recorder("num_0")
    ev = collect_evidence(recorder, categorical, GradingSettings(fingerprint=False))
    sent = recorder.frames[0][column]
    assert sent.dtype == dtype
    k = len(inst.leak_columns)
    expected = [*inst.holdout[column], *[*inst.test[column]] * (k + 1)]
    expected += [*inst.holdout[column].iloc[:AUDIT_ROWS]] * k
    assert Counter(sent) == Counter(expected)  # shuffled, none lost or made up
    assert ev.problem is None
