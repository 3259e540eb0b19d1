"""One episode: instance + sandbox + agent + limits -> transcript, submission, grade, outcome.

The episode owns the tools, the step count and the limits, so every agent is judged the same way.
A step is one agent turn; the first valid submission ends the episode.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leakbench.agents.base import Agent, AgentError, ToolCall, ToolResult, Usage
from leakbench.grading.audit import PipelineLoadError, evidence_in_fresh_worker
from leakbench.grading.grade import Grade, PipelineEvidence, grade, invalid_grade
from leakbench.grading.submission import InvalidSubmission, validate_probabilities
from leakbench.runner.tools import (
    PYTHON_EXPRESSION,
    SUBMIT_ANSWER,
    TOOL_SPECS,
    ToolInputError,
    expression_of,
    submit_code,
)
from leakbench.sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxPool,
    Session,
    SubmitReply,
    SubmitRequest,
)
from leakbench.settings import Settings
from leakbench.store.files import JsonlLog, write_atomic
from leakbench.store.runs import EpisodeRecord, utc_now
from leakbench.task.files import manifest_for
from leakbench.task.generate import Instance, make_instance


class EpisodeCancelled(Exception):
    """The run is being interrupted; this episode is dropped and will run again on resume."""


@dataclass
class EpisodeEnv:
    """What every episode of a run shares."""

    settings: Settings
    pool: SandboxPool
    make_agent: Callable[[], Agent]
    prompts: tuple[str, str]  # (system, task)
    sandbox_slots: threading.Semaphore
    # The run's secret instance key (None with task.public_seeds). It stays in the harness:
    # never in a prompt, a transcript, a sandbox, or any file but the run's private/instance.key.
    instance_key: bytes | None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_event: Callable[[int, str, str], None] | None = None  # (index, kind, text) for -v


# 2: the harness logs a ``submission`` event for every submit attempt (1: none; a viewer could
# only read attempts from the tool output, which agent code can print too).
TRANSCRIPT_SCHEMA_VERSION = 2


class _Submission:
    """The harness side of ``submit_answer``: validates authoritatively, keeps the first valid."""

    def __init__(self, n: int, require_pipeline: bool, check_recipe: bool = True) -> None:
        self.n = n
        self.require_pipeline = require_pipeline
        self.check_recipe = check_recipe
        self.proba: np.ndarray | None = None
        self.has_pipeline = False
        self.attempts = 0
        self.last_problem: str | None = None
        self.last_check: str | None = None  # the failed-check code of the last refusal

    @property
    def accepted(self) -> bool:
        return self.proba is not None

    def __call__(self, request: SubmitRequest) -> SubmitReply:
        if self.accepted:
            return SubmitReply(False, "not counted: a submission was already accepted")
        self.attempts += 1
        try:
            if request.proba is None:
                raise InvalidSubmission("payload", request.problem or "no probabilities found")
            proba = validate_probabilities(request.proba, self.n, shape=request.shape)
            if request.has_pipeline and request.pipeline_problem:
                raise InvalidSubmission(
                    "pipeline",
                    f"{request.pipeline_problem}; the grader must load the pipeline in a fresh "
                    "sandbox, so build it from picklable parts",
                )
            if self.require_pipeline and not request.has_pipeline:
                raise InvalidSubmission(
                    "pipeline",
                    "a fitted pipeline is required: "
                    'submit_answer({"y_pred_proba": proba, "pipeline": pipe})',
                )
            if request.has_pipeline and self.check_recipe:
                self._check_pipeline(request)
        except InvalidSubmission as exc:
            self.last_problem = exc.message
            self.last_check = _CHECK_OF_CODE.get(exc.code, "invalid")
            return SubmitReply(
                False,
                f"submission rejected (it does not count): {exc.message}. Fix it and submit again.",
            )
        self.proba, self.has_pipeline = proba, request.has_pipeline
        extra = " and a fitted pipeline" if request.has_pipeline else ""
        return SubmitReply(
            True, f"submission accepted: {self.n} probabilities{extra}. The episode is over."
        )

    def _check_pipeline(self, request: SubmitRequest) -> None:
        """Refuse a pipeline the grader would reject for its recipe or its refit: the agent
        can still fix it. (The grader checks everything again in clean workers.)"""
        from leakbench.grading.recipe import inspect_recipe

        if request.check_code is not None:
            raise InvalidSubmission(request.check_code, request.check_problem or "")
        if request.recipe is None:
            raise InvalidSubmission("pipeline_problem", "the sandbox sent no recipe")
        found = inspect_recipe(request.recipe)
        if found:
            raise InvalidSubmission(
                "recipe_state",
                f"the unfitted pipeline, clone(pipeline), carries learned state: {found[0]}"
                f"{f' (and {len(found) - 1} more)' if len(found) > 1 else ''}. A pipeline must "
                "learn everything in fit() from train_df; it may not carry fitted models or "
                "data in its parameters, functions or classes",
            )


# InvalidSubmission code -> failed-check code (refusals by a check carry the check's code).
_CHECK_OF_CODE = {
    "payload": "invalid",
    "pipeline": "pipeline_problem",
    "pipeline_problem": "pipeline_problem",
    "nondeterministic": "nondeterministic",
    "refit": "refit",
    "recipe_state": "recipe_state",
}


class Episode:
    def __init__(self, env: EpisodeEnv, index: int, folder: Path) -> None:
        self.env = env
        self.index = index
        self.seed = env.settings.task.seed + index
        self.folder = folder
        self.usage = Usage()
        self.steps = 0
        self.tool_calls = 0
        self.restarts = 0
        grading = env.settings.grading
        self.submission = _Submission(
            env.settings.task.n_test, grading.require_pipeline, grading.refit_check
        )

    def _log(self, event: dict[str, Any]) -> None:
        self.transcript.write({"t": utc_now(), **event})

    def _emit(self, kind: str, text: str) -> None:
        if self.env.on_event is not None:
            self.env.on_event(self.index, kind, text)

    def run(self) -> EpisodeRecord:
        started, clock = utc_now(), time.perf_counter()
        settings = self.env.settings
        self.transcript = JsonlLog(self.folder / "transcript.jsonl")
        error: str | None = None
        result: Grade | None = None
        try:
            instance = make_instance(settings.task, self.seed, key=self.env.instance_key)
            write_atomic(
                self.folder / "instance.json",
                manifest_for(instance, settings.task_hash()).model_dump_json(indent=2) + "\n",
            )
            limits = SandboxLimits.from_settings(settings)
            with self.env.pool.open(instance.train, instance.test, limits) as session:
                end_reason = self._converse(session, instance)
                result = self._grade(session, instance, end_reason)
        except EpisodeCancelled:
            self.transcript.close()
            raise
        except AgentError as exc:
            error = f"model API: {exc}"
        except SandboxError as exc:
            error = f"sandbox: {exc}"
        except Exception as exc:  # a harness fault: keep the run going, keep the evidence
            error = f"harness fault: {type(exc).__name__}: {exc}"
            self._log({"type": "harness_fault", "traceback": traceback.format_exc()})
        if error is not None:
            self._log({"type": "error", "message": error})
        self.transcript.close()
        return self._record(result, error, started, time.perf_counter() - clock)

    # -- the conversation ----------------------------------------------------------------------

    def _converse(self, session: Session, instance: Instance) -> str | None:
        """Play turns until a valid submission, the step limit, or the agent stops.

        Returns why it ended without a valid submission (None when one was accepted).
        """
        settings = self.env.settings
        agent = self.env.make_agent()
        system, task = self.env.prompts
        agent.begin(system, task, TOOL_SPECS)
        self._log(
            {
                "type": "begin",
                "schema_version": TRANSCRIPT_SCHEMA_VERSION,
                "agent": agent.name,
                "seed": self.seed,
                "system": system,
                "task": task,
            }
        )
        results: list[ToolResult] = []
        while self.steps < settings.agent.max_steps:
            if self.env.cancel.is_set():
                raise EpisodeCancelled
            turn = agent.next_turn(results)
            self.steps += 1
            self.usage.add(turn.usage)
            for record in turn.records:
                self._log({"type": "api_call", **record})
            self._log(
                {
                    "type": "turn",
                    "step": self.steps,
                    "stop": turn.stop,
                    "text": turn.text,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "name": c.name,
                            "input": c.input,
                            "truncated": c.truncated,
                            **({"problem": c.problem} if c.problem is not None else {}),
                        }
                        for c in turn.tool_calls
                    ],
                    "usage": turn.usage.as_dict(),
                }
            )
            if turn.text:
                self._emit("text", turn.text)
            if turn.stop == "refusal":
                return "the model refused"
            if turn.stop == "content_filter":
                return "the provider's content filter stopped the model's reply"
            if turn.stop == "context_overflow":
                return "the conversation outgrew the model's context window"
            if not turn.tool_calls:
                if turn.stop == "max_tokens":
                    results = []
                    continue
                return "the agent ended its turn without submitting"
            results = [self._tool(session, call) for call in turn.tool_calls]
            if self.submission.accepted:
                return None
        return f"step limit ({settings.agent.max_steps}) reached without a valid submission"

    def _tool(self, session: Session, call: ToolCall) -> ToolResult:
        self.tool_calls += 1
        if call.truncated:
            result = ToolResult(
                call.id,
                "not run: this tool call was cut off by max_tokens; send shorter code",
                True,
            )
        elif call.problem is not None:
            result = ToolResult(call.id, call.problem, True)
        elif self.submission.accepted:
            result = ToolResult(call.id, "not run: a submission was already accepted", True)
        else:
            result = self._run_tool(session, call)
        self._log(
            {
                "type": "tool_result",
                "id": call.id,
                "content": result.content,
                "is_error": result.is_error,
            }
        )
        return result

    def _run_tool(self, session: Session, call: ToolCall) -> ToolResult:
        try:
            if call.name == PYTHON_EXPRESSION:
                code = expression_of(call.input)
            elif call.name == SUBMIT_ANSWER:
                code = submit_code(call.input)
            else:
                known = f"{PYTHON_EXPRESSION}, {SUBMIT_ANSWER}"
                return ToolResult(call.id, f"unknown tool '{call.name}'; tools: {known}", True)
        except ToolInputError as exc:
            return ToolResult(call.id, str(exc), True)
        self._emit("code", code)

        def on_submit(request: SubmitRequest) -> SubmitReply:
            # The harness's own record of every attempt: a viewer must not have to trust lines
            # in the agent's output, which the agent can print itself.
            reply = self.submission(request)
            self._log(
                {
                    "type": "submission",
                    "id": call.id,
                    "accepted": reply.accepted,
                    "message": reply.message,
                }
            )
            return reply

        with self.env.sandbox_slots:
            outcome = session.execute(code, on_submit=on_submit)
        self.restarts += outcome.restarted
        self._log(
            {
                "type": "sandbox_call",
                "id": call.id,
                "ok": outcome.ok,
                "timed_out": outcome.timed_out,
                "restarted": outcome.restarted,
                "duration_s": outcome.duration_s,
            }
        )
        self._emit("result", outcome.output)
        return ToolResult(call.id, outcome.output, not outcome.ok)

    # -- grading -------------------------------------------------------------------------------

    def _grade(self, session: Session, instance: Instance, end_reason: str | None) -> Grade:
        grading = self.env.settings.grading
        sub = self.submission
        if sub.proba is None:
            if sub.attempts:
                reason = f"no valid submission ({end_reason}); last problem: {sub.last_problem}"
                result = invalid_grade(grading, reason, "invalid", sub.last_check)
            else:
                result = invalid_grade(grading, end_reason or "no submission", "no_submission")
        else:
            evidence = None
            if sub.has_pipeline:
                blob = self._store_pipeline(session)
                with self.env.sandbox_slots:
                    evidence = self._evidence(blob, session, instance)
            write_atomic(
                self.folder / "submission" / "probabilities.csv",
                pd.DataFrame({"y_pred_proba": sub.proba}).to_csv(index=False, lineterminator="\n"),
            )
            result = grade(instance, sub.proba, grading, evidence)
        write_atomic(self.folder / "grade.json", result.model_dump_json(indent=2) + "\n")
        return result

    def _store_pipeline(self, session: Session) -> bytes | None:
        # Opaque bytes: stored for the user, never unpickled by the harness.
        blob = session.pipeline_bytes()
        if blob is not None:
            write_atomic(self.folder / "submission" / "pipeline.pkl", blob)
        elif session.pipeline_problem:
            write_atomic(
                self.folder / "submission" / "pipeline_problem.txt", session.pipeline_problem
            )
        return blob

    def _evidence(
        self, blob: bytes | None, session: Session, instance: Instance
    ) -> PipelineEvidence:
        """The submitted pipeline's evidence, gathered in a fresh worker."""
        if blob is None:
            return PipelineEvidence(problem=session.pipeline_problem or "no pipeline bytes")
        settings = self.env.settings
        try:
            return evidence_in_fresh_worker(
                self.env.pool,
                instance,
                SandboxLimits.from_settings(settings),
                blob,
                settings.grading,
            )
        except PipelineLoadError as exc:
            return PipelineEvidence(problem=f"it cannot be loaded in a fresh sandbox: {exc}")

    def _record(
        self, result: Grade | None, error: str | None, started: str, wall_s: float
    ) -> EpisodeRecord:
        settings = self.env.settings
        common: dict[str, Any] = {
            "index": self.index,
            "seed": self.seed,
            "model": settings.agent.model,
            "preset": settings.task.preset,
            "steps": self.steps,
            "tool_calls": self.tool_calls,
            "submit_attempts": self.submission.attempts,
            "restarts": self.restarts,
            "usage": self.usage.as_dict(),
            "wall_s": wall_s,
            "started_at": started,
            "finished_at": utc_now(),
            "threshold": settings.grading.threshold,
            "metric": settings.grading.metric,
        }
        if result is None:
            return EpisodeRecord(
                outcome="error", passed=False, error=error, reasons=[error or ""], **common
            )
        return EpisodeRecord(
            outcome=result.outcome,
            passed=result.passed,
            score=result.score,
            lower_is_better=result.lower_is_better,
            metrics=result.metrics,
            reasons=result.reasons,
            leaks_detected=result.leaks_detected,
            gates_passed=result.gates_passed,
            failed_checks=result.failed_checks,
            **common,
        )
