"""A run as an Inspect AI eval log (SPEC §11), for ``inspect view`` and Inspect's log tools.

The log is built from inspect_ai's own types and written by its own writer, so it is whatever
the installed inspect_ai reads. inspect_ai is an optional dependency (``leakbench[inspect]``),
imported only here and only when a log is made: ``leakbench`` itself starts without it.

One sample per finished episode, id = the episode index. Its chat is rebuilt from the
harness's own events in ``transcript.jsonl`` (``begin``, ``turn``, ``tool_result``), which every
agent writes the same way, not from the raw API calls. Run status maps to the log status as
``STATUS`` says; see docs/export.md for the whole field mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from leakbench.errors import LeakbenchError
from leakbench.report.inspect_chat import STOP_REASON, chat
from leakbench.stats import pass_rate
from leakbench.store.files import fsync_dir, read_jsonl, sha256_file
from leakbench.store.runs import EpisodeRecord, RunDir, summarize

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog, EvalResults, EvalSample, EvalStats
    from inspect_ai.model import ModelUsage
    from inspect_ai.scorer import Score

LogFormat = Literal["eval", "json"]
LOG_FORMATS: tuple[str, ...] = ("eval", "json")
INSTALL = "pip install 'leakbench[inspect]'"
SCORER = "leakbench"
# Run status -> Inspect log status. An Inspect eval whose samples errored is an "error" log;
# a stopped one is "cancelled"; "started" is a log still being written (or its writer died).
STATUS = {
    "completed": "success",
    "completed_with_errors": "error",
    "interrupted": "cancelled",
    "running": "started",
}


def require_inspect() -> None:
    """A ``LeakbenchError`` saying how to install inspect_ai, unless it can be imported."""
    try:
        import inspect_ai.log  # noqa: F401
    except ImportError:
        raise LeakbenchError(f"exporting an Inspect log needs inspect_ai: {INSTALL}") from None


def export_inspect(run: RunDir, out_dir: Path, *, log_format: LogFormat = "eval") -> Path:
    """Write ``run`` as an Inspect eval log in ``out_dir``; returns the log file.

    The name follows Inspect's ``<created>_<task>_<id>.eval`` (or ``.json``); the id comes
    from the run id, so exporting a run again replaces its log instead of adding one.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    require_inspect()
    from inspect_ai.log import write_eval_log

    log = eval_log(run)
    created = datetime.fromisoformat(log.eval.created).astimezone(UTC)
    stamp = created.isoformat(timespec="seconds")
    name = f"{_clean(stamp)}_{_clean(log.eval.task)}_{log.eval.task_id}.{log_format}"
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # Inspect's writer writes in place: a temp file beside the log, renamed over it, keeps a
    # reader (inspect view watches the folder) from ever seeing half a log.
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        write_eval_log(log, str(tmp), format=log_format)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def eval_log(run: RunDir) -> EvalLog:
    """The run as an in-memory ``EvalLog`` (samples included)."""
    from inspect_ai import __version__ as inspect_version
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalError,
        EvalLog,
        EvalPlan,
        EvalPlanStep,
        EvalSpec,
    )
    from inspect_ai.model import GenerateConfig

    manifest = run.manifest
    records = run.records()
    settings = run.settings()
    errors = [r for r in records if r.outcome == "error"]
    local = manifest.model.startswith("local/")
    agent = settings.agent
    spec = EvalSpec(
        eval_id=_short_id("eval", manifest.run_id),
        run_id=manifest.run_id,
        created=_utc(manifest.created_at),
        task=f"leakbench/{manifest.preset}",
        task_id=_short_id("task", manifest.run_id),
        task_args={"run_id": manifest.run_id, "settings_hash": settings.task_hash()},
        solver="leakbench/tool_loop",
        dataset=EvalDataset(
            name=f"leakbench/{manifest.preset}",
            samples=manifest.runs,
            sample_ids=[r.index for r in records],
        ),
        model=manifest.model,
        model_generate_config=(
            GenerateConfig()
            if local
            else GenerateConfig(max_tokens=agent.max_tokens, temperature=agent.temperature)
        ),
        config=EvalConfig(epochs=1),
        packages={"leakbench": manifest.leakbench_version, "inspect_ai": inspect_version},
        metadata={
            "run_id": manifest.run_id,
            # the hash instance.json records: everything that shapes the instances but the seed
            "settings_hash": settings.task_hash(),
            "settings_toml_sha256": sha256_file(run.path / "settings.toml"),
            "run_status": manifest.status,
            "leakbench_version": manifest.leakbench_version,
            "argv": manifest.argv,
            "base_seed": manifest.base_seed,
            "isolation": manifest.isolation,
            "public_seeds": manifest.public_seeds,
        },
    )
    plan = EvalPlan(
        steps=[
            EvalPlanStep(
                solver="leakbench/tool_loop",
                params={"agent": manifest.model, "max_steps": agent.max_steps},
            )
        ]
    )
    status = _status(manifest.status, errors)
    error = None
    if status == "error":
        first = errors[0].error if errors else None
        error = EvalError(
            message=f"{len(errors)} episode(s) ended in error"
            + (f"; the first: {first}" if first else "")
            + f" (`leakbench run --resume {manifest.run_id}` runs them again)",
            traceback="",
            traceback_ansi="",
        )
    return EvalLog(
        status=status,
        eval=spec,
        plan=plan,
        results=_results(manifest.runs, records),
        stats=_stats(run),
        error=error,
        samples=[_sample(run, record) for record in records],
    )


def _status(run_status: str, errors: list[EpisodeRecord]) -> str:
    status = STATUS.get(run_status, "started")
    # an interrupted run's errors are still errors; a completed run never has any
    return "error" if status == "success" and errors else status


# -- samples ------------------------------------------------------------------------------------


def _sample(run: RunDir, record: EpisodeRecord) -> EvalSample:
    from inspect_ai.log import EvalError, EvalSample
    from inspect_ai.model import ChatCompletionChoice, ChatMessageAssistant, ModelOutput

    folder = run.episode_dir(record.index)
    events = list(read_jsonl(folder / "transcript.jsonl"))
    task_prompt, messages = chat(events, record.model)
    for number, message in enumerate(messages):
        # Inspect would draw random ids: fixed ones keep a re-export byte for byte the same
        message.id = f"{record.index}.{number}"
    usage = _usage(record.usage)
    assistant = [m for m in messages if isinstance(m, ChatMessageAssistant)]
    turns = [e for e in events if e.get("type") == "turn"]
    choices = []
    if assistant:
        stop = STOP_REASON.get(str(turns[-1].get("stop")), "unknown")
        choices = [ChatCompletionChoice(message=assistant[-1], stop_reason=stop)]
    output = ModelOutput(
        model=record.model,
        choices=choices,
        completion=assistant[-1].text if assistant else "",
        usage=usage,
        error=record.error,
    )
    error = None
    if record.outcome == "error":
        faults = [e for e in events if e.get("type") == "harness_fault"]
        trace = str(faults[-1].get("traceback", "")) if faults else ""
        error = EvalError(message=record.error or "error", traceback=trace, traceback_ansi=trace)
    return EvalSample(
        id=record.index,
        epoch=1,
        input=task_prompt,
        target=_target(record),
        messages=messages,
        output=output,
        scores=None if record.outcome == "error" else {SCORER: _score(folder, record)},
        metadata={
            "seed": record.seed,
            "outcome": record.outcome,
            "passed": record.passed,
            "score": record.score,
            "threshold": record.threshold,
            "metric": record.metric,
            "lower_is_better": record.lower_is_better,
            "steps": record.steps,
            "tool_calls": record.tool_calls,
            "submit_attempts": record.submit_attempts,
            "restarts": record.restarts,
            "episode_dir": str(folder.relative_to(run.path)),
        },
        model_usage={record.model: usage} if usage is not None else {},
        started_at=_utc(record.started_at),
        completed_at=_utc(record.finished_at),
        total_time=round(record.wall_s, 3),
        working_time=round(record.wall_s, 3),
        error=error,
    )


def _target(record: EpisodeRecord) -> str:
    sign = "<=" if record.lower_is_better else ">="
    return f"{record.metric} {sign} {record.threshold:.4g}, every check passed"


def _score(folder: Path, record: EpisodeRecord) -> Score:
    from inspect_ai.scorer import CORRECT, INCORRECT, Score

    grade = _read_json(folder / "grade.json")
    explanation = "\n".join(f"- {reason}" for reason in record.reasons)
    if not explanation and record.score is not None:
        sign = "<=" if record.lower_is_better else ">="
        explanation = (
            f"{record.metric} {record.score:.4g} {sign} threshold {record.threshold:.4g}; "
            "every check passed"
        )
    return Score(
        value=CORRECT if record.passed else INCORRECT,
        answer=record.outcome,
        explanation=explanation or None,
        metadata={
            "score": record.score,
            "metrics": record.metrics,
            "checks": checks_summary(grade.get("checks") or {}),
            "failed_checks": record.failed_checks,
            "leaks_detected": record.leaks_detected,
            "gates_passed": record.gates_passed,
        },
    )


def checks_summary(checks: dict[str, Any]) -> dict[str, Any]:
    """``grade.json``'s checks, flat: nested numbers as dotted keys (``ceiling.z``), lists of
    numbers (permuted skills) left out, so the viewer shows one table."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list):
            if all(isinstance(v, str) for v in value):
                flat[prefix] = value
        else:
            flat[prefix] = value

    add("", checks)
    return flat


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- results and usage ----------------------------------------------------------------------------


def _results(planned: int, records: list[EpisodeRecord]) -> EvalResults:
    from inspect_ai.log import EvalMetric, EvalResults, EvalScore

    rate = pass_rate(records)
    counts = summarize(records)
    metrics: dict[str, EvalMetric] = {}
    if rate.rate is not None:
        low, high = rate.interval
        metrics["accuracy"] = EvalMetric(name="accuracy", value=rate.rate)
        metrics["pass_rate_low"] = EvalMetric(name="pass_rate_low", value=low)
        metrics["pass_rate_high"] = EvalMetric(name="pass_rate_high", value=high)
    by_metric: dict[str, list[float]] = {}
    for record in records:
        if record.score is not None:
            by_metric.setdefault(record.metric, []).append(record.score)
    for metric, scores in by_metric.items():
        # a run re-graded under another metric still has one per episode; never mixed here
        name = "mean_score" if len(by_metric) == 1 else f"mean_score.{metric}"
        metrics[name] = EvalMetric(
            name=name, value=sum(scores) / len(scores), params={"metric": metric}
        )
    thresholds = Counter(r.threshold for r in records if r.outcome != "error")
    score = EvalScore(
        name=SCORER,
        scorer=SCORER,
        scored_samples=rate.graded,
        unscored_samples=counts["error"],
        params={"threshold": thresholds.most_common(1)[0][0]} if thresholds else {},
        metrics=metrics,
        metadata=counts,
    )
    return EvalResults(
        total_samples=planned,
        completed_samples=rate.graded,
        scores=[score],
        metadata={"counts": counts, "passed": rate.passed, "graded": rate.graded},
    )


def _usage(usage: dict[str, float]) -> ModelUsage | None:
    """Inspect's usage for leakbench's, or None where no token was counted (a scripted policy).
    Both count input tokens without the cached ones, as the Anthropic API does."""
    from inspect_ai.model import ModelUsage

    tokens = {
        key: round(usage.get(key, 0.0) or 0.0)
        for key in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
    }
    if not any(tokens.values()):
        return None
    cost = usage.get("cost_usd") or 0.0
    return ModelUsage(
        input_tokens=tokens["input_tokens"],
        output_tokens=tokens["output_tokens"],
        total_tokens=sum(tokens.values()),
        input_tokens_cache_write=tokens["cache_write_tokens"],
        input_tokens_cache_read=tokens["cache_read_tokens"],
        total_cost=cost if cost > 0 else None,  # 0 means no price was known
    )


def _stats(run: RunDir) -> EvalStats:
    from inspect_ai.log import EvalStats

    manifest = run.manifest
    # the manifest's usage: every episode the run ever ran, those resume dropped too
    usage = _usage(manifest.usage)
    return EvalStats(
        started_at=_utc(manifest.created_at),
        completed_at="" if manifest.status == "running" else _utc(manifest.updated_at),
        model_usage={manifest.model: usage} if usage is not None else {},
    )


# -- names ----------------------------------------------------------------------------------------


def _utc(stamp: str) -> str:
    """leakbench's ``...Z`` time as the ISO form with an offset that Inspect writes."""
    return datetime.fromisoformat(stamp).astimezone(UTC).isoformat()


def _short_id(kind: str, run_id: str) -> str:
    # Inspect's ids are 22 characters without '_' or '-' (its file names are split on both).
    return hashlib.sha256(f"{kind}:{run_id}".encode()).hexdigest()[:22]


def _clean(component: str) -> str:
    # what Inspect does to each part of a log file name
    return component.replace("_", "-").replace("/", "-").replace(":", "-").replace("+", "-")
