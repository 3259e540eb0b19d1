"""Re-grading a finished run under new grading settings, from what its episodes measured."""

from __future__ import annotations

from leakbench.grading.grade import Grade, regrade
from leakbench.runner.run import summarize, total_usage
from leakbench.settings import GradingSettings
from leakbench.store.files import write_atomic
from leakbench.store.runs import EpisodeRecord, RunDir


def regrade_run(run: RunDir, grading: GradingSettings) -> list[EpisodeRecord]:
    """Judge every graded episode of ``run`` again; rewrite its grade files, log and settings.

    Nothing is run again: ``grade.json`` holds the metrics and the numbers behind every check.
    Episodes that ended in an infrastructure error have no grade and stay as they are.
    """
    updated: list[EpisodeRecord] = []
    for record in run.records():
        path = run.episode_dir(record.index) / "grade.json"
        if record.outcome == "error" or not path.is_file():
            updated.append(record)
            continue
        new = regrade(Grade.model_validate_json(path.read_text(encoding="utf-8")), grading)
        write_atomic(path, new.model_dump_json(indent=2) + "\n")
        updated.append(
            record.model_copy(
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
        )
    settings = run.settings().model_copy(update={"grading": grading})
    write_atomic(run.path / "settings.toml", settings.to_toml())
    run.rewrite_records(updated)
    run.write_manifest(counts=summarize(updated), usage=total_usage(updated))
    return updated
