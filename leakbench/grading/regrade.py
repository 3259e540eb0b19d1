"""Re-grading a finished run under new grading settings, from what its episodes measured."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from leakbench.grading.grade import Grade, grade, not_measured, regrade
from leakbench.sandbox import SandboxLimits, SandboxPool
from leakbench.settings import GradingSettings
from leakbench.store.files import write_atomic
from leakbench.store.runs import EpisodeRecord, RunDir, summarize, total_usage
from leakbench.task.generate import make_instance


def regrade_run(
    run: RunDir, grading: GradingSettings, *, measure: bool = True
) -> list[EpisodeRecord]:
    """Judge every graded episode of ``run`` again; rewrite its grade files, log and settings.

    Nothing is run again where the episode measured everything ``grading`` asks for:
    ``grade.json`` holds the metrics and the numbers behind every check. A pipeline check that
    is on now but was off when an episode was graded is measured (``measure``): the stored
    pipeline is graded afresh in clean sandbox workers against the run's instance; without
    ``measure``, or without a stored pipeline, the episode fails it as ``not_measured``.
    Episodes that ended in an infrastructure error have no grade and stay as they are. Holds
    the run's writer lock throughout.
    """
    with run.writing("re-grade"), contextlib.ExitStack() as stack:
        pool: SandboxPool | None = None
        updated: list[EpisodeRecord] = []
        for record in run.records():
            folder = run.episode_dir(record.index)
            path = folder / "grade.json"
            if record.outcome == "error" or not path.is_file():
                updated.append(record)
                continue
            old = Grade.model_validate_json(path.read_text(encoding="utf-8"))
            new = regrade(old, grading)
            if measure and not_measured(old.checks, grading) and _stored(folder):
                if pool is None:
                    pool = stack.enter_context(SandboxPool())
                new = _measure_again(run, record, grading, pool)
            write_atomic(path, new.model_dump_json(indent=2) + "\n")
            updated.append(_updated(record, new))
        settings = run.settings().model_copy(update={"grading": grading})
        write_atomic(run.path / "settings.toml", settings.to_toml())
        run.rewrite_records(updated)
        run.write_manifest(
            counts=summarize(updated),
            usage=total_usage(updated, run.manifest.usage_of_dropped),
        )
    return updated


def _stored(folder: Path) -> bool:
    sub = folder / "submission"
    return (sub / "pipeline.pkl").is_file() and (sub / "probabilities.csv").is_file()


def _measure_again(
    run: RunDir, record: EpisodeRecord, grading: GradingSettings, pool: SandboxPool
) -> Grade:
    """The episode's stored submission graded afresh (its pipeline in clean workers)."""
    from leakbench.grading.audit import PipelineLoadError, evidence_in_fresh_worker
    from leakbench.grading.grade import PipelineEvidence

    settings = run.settings().model_copy(update={"grading": grading})
    instance = make_instance(settings.task, record.seed, key=run.instance_key())
    sub = run.episode_dir(record.index) / "submission"
    proba = pd.read_csv(sub / "probabilities.csv")["y_pred_proba"].to_numpy(dtype=np.float64)
    limits = SandboxLimits.from_settings(settings)
    try:
        evidence = evidence_in_fresh_worker(
            pool, instance, limits, (sub / "pipeline.pkl").read_bytes(), grading
        )
    except PipelineLoadError as exc:
        evidence = PipelineEvidence(problem=f"it cannot be loaded in a fresh sandbox: {exc}")
    return grade(instance, proba, grading, evidence)


def _updated(record: EpisodeRecord, new: Grade) -> EpisodeRecord:
    return record.model_copy(
        update={
            "outcome": new.outcome,
            "passed": new.passed,
            "metric": new.metric,
            "score": new.score,
            "threshold": new.threshold,
            "lower_is_better": new.lower_is_better,
            "reasons": new.reasons,
            "leaks_detected": new.leaks_detected,
            "gates_passed": new.gates_passed,
            "failed_checks": new.failed_checks,
        }
    )
