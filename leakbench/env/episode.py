"""One episode as an environment (SPEC §10): the instance, its sandbox, the two tools, the step
limit, the submission and the grade.

``EnvEpisode`` is the harness side of every episode: ``leakbench run`` drives its agents through
it, and ``leakbench.env.Environment`` hands it to trainers. One ``step`` is one agent turn: the
turn's tool calls run in the episode's sandbox, in order. The episode ends at the first valid
submission, at the step limit, or when the caller says the agent stopped (``end=``); it is then
graded at once, and the sandbox is released. Nothing the agent's code does raises here: a bad
tool call is an error result, a hostile worker a failed or invalid grade. What raises is a fault
of the harness itself (``SandboxError`` when no worker can start at all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leakbench.agents.base import ToolCall, ToolResult
from leakbench.env.tools import (
    PYTHON_EXPRESSION,
    SUBMIT_ANSWER,
    TOOL_SPECS,
    ToolInputError,
    as_openai_tools,
    expression_of,
    submit_code,
)
from leakbench.grading.audit import PipelineLoadError, evidence_in_fresh_worker
from leakbench.grading.grade import Grade, PipelineEvidence, grade, invalid_grade
from leakbench.grading.submission import InvalidSubmission, validate_probabilities
from leakbench.sandbox import SandboxLimits, SandboxPool, Session, SubmitReply, SubmitRequest
from leakbench.settings import Settings
from leakbench.store.files import JsonlLog, write_atomic
from leakbench.store.runs import utc_now
from leakbench.task.files import manifest_for
from leakbench.task.generate import Instance, make_instance

# 2: the harness logs a ``submission`` event for every submit attempt (1: none; a viewer could
# only read attempts from the tool output, which agent code can print too).
TRANSCRIPT_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Observation:
    """What an episode starts with: the prompts and the tools, in both APIs' shapes."""

    seed: int
    system_prompt: str
    task_prompt: str
    tools: list[dict[str, Any]]  # Anthropic's shape: name, description, input_schema
    openai_tools: list[dict[str, Any]]  # Chat Completions' shape: {"type": "function", ...}
    max_steps: int


@dataclass(frozen=True)
class StepResult:
    """What one step gives back: a result per tool call (in order), whether the episode is over,
    and once it is, the grade and the reward computed from it."""

    tool_results: list[ToolResult]
    done: bool
    grade: Grade | None = None
    reward: float | None = None
    end_reason: str | None = None  # why it ended without a valid submission, if it did


class MemoryLog:
    """A transcript kept in memory, for episodes without a folder."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.events.append(record)

    def close(self) -> None:
        pass


class Submission:
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
            self.last_check = CHECK_OF_CODE.get(exc.code, "invalid")
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
CHECK_OF_CODE = {
    "payload": "invalid",
    "pipeline": "pipeline_problem",
    "pipeline_problem": "pipeline_problem",
    "nondeterministic": "nondeterministic",
    "refit": "refit",
    "recipe_state": "recipe_state",
}


@dataclass(kw_only=True)
class EpisodeResources:
    """What the episodes of one run or environment share."""

    settings: Settings
    pool: SandboxPool
    prompts: tuple[str, str]  # (system, task)
    sandbox_slots: threading.Semaphore
    # The secret instance key (None with task.public_seeds). It stays in the harness: never in
    # a prompt, a transcript, a sandbox, or any file but a run's private/instance.key.
    instance_key: bytes | None
    reward: Callable[[Grade], float] = field(default=lambda g: 1.0 if g.passed else 0.0)
    on_event: Callable[[int, str, str], None] | None = None  # (index, kind, text) for -v


def sandbox_slots(settings: Settings) -> threading.Semaphore:
    """Sandbox calls at once: ``run.sandbox_concurrency``, default one per core."""
    return threading.Semaphore(settings.run.sandbox_concurrency or (os.cpu_count() or 1))


class EnvEpisode:
    """One episode's harness side. Not shared between threads; ``close`` is idempotent.

    ``folder``: where its files go (``instance.json``, ``transcript.jsonl``, ``grade.json``,
    ``submission/``); None keeps the transcript in memory (``transcript_events``) and writes
    nothing.
    """

    def __init__(
        self,
        shared: EpisodeResources,
        seed: int,
        *,
        index: int = 0,
        folder: Path | None = None,
    ) -> None:
        settings = shared.settings
        self.shared = shared
        self.seed = seed
        self.index = index
        self.folder = folder
        self.steps = 0
        self.tool_calls = 0
        self.restarts = 0
        self.done = False
        self.grade: Grade | None = None
        self.reward: float | None = None
        self.end_reason: str | None = None
        grading = settings.grading
        self.submission = Submission(
            settings.task.n_test, grading.require_pipeline, grading.refit_check
        )
        self._log_to: JsonlLog | MemoryLog = (
            JsonlLog(folder / "transcript.jsonl") if folder is not None else MemoryLog()
        )
        self._session: Session | None = None
        self._instance: Instance | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self, agent: str = "external") -> Observation:
        """Draw the instance, start its sandbox, log the beginning (``agent``: who acts, as the
        transcript names it); the observation to act on."""
        settings = self.shared.settings
        instance = make_instance(settings.task, self.seed, key=self.shared.instance_key)
        if self.folder is not None:
            write_atomic(
                self.folder / "instance.json",
                manifest_for(instance, settings.task_hash()).model_dump_json(indent=2) + "\n",
            )
        self._instance = instance
        self._session = self.shared.pool.open(
            instance.train, instance.test, SandboxLimits.from_settings(settings)
        )
        system, task = self.shared.prompts
        self.log(
            {
                "type": "begin",
                "schema_version": TRANSCRIPT_SCHEMA_VERSION,
                "agent": agent,
                "seed": self.seed,
                "system": system,
                "task": task,
            }
        )
        return Observation(
            seed=self.seed,
            system_prompt=system,
            task_prompt=task,
            tools=[dict(t) for t in TOOL_SPECS],
            openai_tools=as_openai_tools(TOOL_SPECS),
            max_steps=settings.agent.max_steps,
        )

    def close(self) -> None:
        """Release the sandbox and close the transcript (an episode closed before it ended is
        not graded)."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self._log_to.close()

    @property
    def transcript_events(self) -> list[dict[str, Any]]:
        """The transcript of an episode without a folder (empty with one: read the file)."""
        return self._log_to.events if isinstance(self._log_to, MemoryLog) else []

    def log(self, event: dict[str, Any]) -> None:
        """Add an event to the transcript (the agent's side logs its API calls and turns here)."""
        self._log_to.write({"t": utc_now(), **event})

    def _emit(self, kind: str, text: str) -> None:
        if self.shared.on_event is not None:
            self.shared.on_event(self.index, kind, text)

    # -- steps -----------------------------------------------------------------------------------

    def step(self, tool_calls: Sequence[ToolCall], *, end: str | None = None) -> StepResult:
        """One agent turn: run ``tool_calls`` in order and answer each.

        ``end``: the agent stopped this turn (it refused, ended its turn, ran out of context):
        say why; nothing is run and the episode ends. A turn with no tool calls and no ``end``
        (a reply cut off at its token limit, a trainer's nudge) counts as a step and goes on.
        """
        if self.done:
            raise RuntimeError("step() after the episode ended")
        if self._session is None:
            raise RuntimeError("step() before open()")
        self.steps += 1
        if end is not None:
            return self._finish(end, [])
        results = [self._tool(call) for call in tool_calls]
        if self.submission.accepted:
            return self._finish(None, results)
        limit = self.shared.settings.agent.max_steps
        if self.steps >= limit:
            return self._finish(f"step limit ({limit}) reached without a valid submission", results)
        return StepResult(results, False)

    def _finish(self, end_reason: str | None, results: list[ToolResult]) -> StepResult:
        assert self._session is not None and self._instance is not None
        self.end_reason = end_reason
        self.grade = self._grade(self._session, self._instance, end_reason)
        self.reward = float(self.shared.reward(self.grade))
        self.done = True
        self._session.close()
        self._session = None
        return StepResult(results, True, self.grade, self.reward, end_reason)

    def _tool(self, call: ToolCall) -> ToolResult:
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
            result = self._run_tool(call)
        self.log(
            {
                "type": "tool_result",
                "id": call.id,
                "content": result.content,
                "is_error": result.is_error,
            }
        )
        return result

    def _run_tool(self, call: ToolCall) -> ToolResult:
        assert self._session is not None
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
            self.log(
                {
                    "type": "submission",
                    "id": call.id,
                    "accepted": reply.accepted,
                    "message": reply.message,
                }
            )
            return reply

        with self.shared.sandbox_slots:
            outcome = self._session.execute(code, on_submit=on_submit)
        self.restarts += outcome.restarted
        self.log(
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

    # -- grading ---------------------------------------------------------------------------------

    def _grade(self, session: Session, instance: Instance, end_reason: str | None) -> Grade:
        grading = self.shared.settings.grading
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
                with self.shared.sandbox_slots:
                    evidence = self._evidence(blob, session, instance)
            self._write(
                "submission/probabilities.csv",
                pd.DataFrame({"y_pred_proba": sub.proba}).to_csv(index=False, lineterminator="\n"),
            )
            result = grade(instance, sub.proba, grading, evidence)
        self._write("grade.json", result.model_dump_json(indent=2) + "\n")
        return result

    def _write(self, name: str, data: str | bytes) -> None:
        if self.folder is not None:
            write_atomic(self.folder / name, data)

    def _store_pipeline(self, session: Session) -> bytes | None:
        # Opaque bytes: stored for the user, never unpickled by the harness.
        blob = session.pipeline_bytes()
        if blob is not None:
            self._write("submission/pipeline.pkl", blob)
        elif session.pipeline_problem:
            self._write("submission/pipeline_problem.txt", session.pipeline_problem)
        return blob

    def _evidence(
        self, blob: bytes | None, session: Session, instance: Instance
    ) -> PipelineEvidence:
        """The submitted pipeline's evidence, gathered in a fresh worker."""
        if blob is None:
            return PipelineEvidence(problem=session.pipeline_problem or "no pipeline bytes")
        settings = self.shared.settings
        try:
            return evidence_in_fresh_worker(
                self.shared.pool,
                instance,
                SandboxLimits.from_settings(settings),
                blob,
                settings.grading,
            )
        except PipelineLoadError as exc:
            return PipelineEvidence(problem=f"it cannot be loaded in a fresh sandbox: {exc}")
