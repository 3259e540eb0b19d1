"""Grading predictions or a pickled pipeline that a user brings, against a generated instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leakbench.errors import UsageError
from leakbench.grading.grade import Grade, PipelineEvidence, grade
from leakbench.grading.submission import InvalidSubmission, load_predictions, validate_probabilities
from leakbench.settings import Settings
from leakbench.task.generate import Instance


def grade_external(
    instance: Instance,
    settings: Settings,
    predictions: Path | None = None,
    pipeline: Path | None = None,
) -> Grade:
    """Grade a predictions file and/or a pickled pipeline.

    A bad predictions file raises ``UsageError`` (exit code 2) with the exact problem. The
    pipeline is unpickled only inside a sandbox worker; without a predictions file its own
    predictions on the public test are graded.
    """
    if predictions is None and pipeline is None:
        raise UsageError("nothing to grade", hint="give --predictions FILE and/or --pipeline FILE")
    proba: np.ndarray | None = None
    if predictions is not None:
        try:
            proba = validate_probabilities(
                load_predictions(predictions, n_expected=len(instance.y_test)), len(instance.y_test)
            )
        except InvalidSubmission as exc:
            raise UsageError(f"invalid predictions: {exc.message}") from None
    evidence = None
    if pipeline is not None:
        evidence = _pipeline_evidence(instance, settings, pipeline)
        if proba is None:
            if evidence.test_proba is None:
                raise UsageError(
                    f"{pipeline}: {evidence.problem or 'the pipeline did not predict'}"
                )
            proba = evidence.test_proba
    return grade(instance, proba, settings.grading, evidence)


def _pipeline_evidence(instance: Instance, settings: Settings, path: Path) -> PipelineEvidence:
    from leakbench.grading.audit import PipelineLoadError, evidence_in_fresh_worker
    from leakbench.sandbox import SandboxLimits, SandboxPool

    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    data = path.read_bytes()
    with SandboxPool() as pool:
        try:
            return evidence_in_fresh_worker(
                pool, instance, SandboxLimits.from_settings(settings), data, settings.grading
            )
        except PipelineLoadError as exc:
            raise UsageError(f"{path}: cannot load the pipeline: {exc}") from None
