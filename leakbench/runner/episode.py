"""One episode of a run: an agent driven through the environment's episode (``leakbench.env``)
-> transcript, submission, grade, outcome, record.

The environment's episode owns the tools, the step count, the limits and the grade, so every
agent is judged the same way and a trainer driving ``leakbench.env`` gets the very same
episode; this module adds only the agent's side (its turns, API calls and usage) and the run's
record.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leakbench.agents.base import Agent, AgentError, ToolResult, Turn, Usage
from leakbench.env.episode import (
    TRANSCRIPT_SCHEMA_VERSION,
    EnvEpisode,
    EpisodeResources,
    StepResult,
)
from leakbench.env.tools import TOOL_SPECS
from leakbench.grading.grade import Grade
from leakbench.sandbox import SandboxError
from leakbench.store.runs import EpisodeRecord, utc_now

__all__ = [
    "NO_TOOL_CALL",
    "TRANSCRIPT_SCHEMA_VERSION",
    "Episode",
    "EpisodeCancelled",
    "EpisodeEnv",
    "turn_end",
]

# Turns that end the episode, and why.
_STOPS = {
    "refusal": "the model refused",
    "content_filter": "the provider's content filter stopped the model's reply",
    "context_overflow": "the conversation outgrew the model's context window",
}
NO_TOOL_CALL = "the agent ended its turn without submitting"


def turn_end(turn: Turn) -> str | None:
    """Why ``turn`` ends its episode (it refused, ran out of context, or ended without a tool
    call), or None when the episode goes on: a reply cut off at its token limit goes on."""
    end = _STOPS.get(turn.stop)
    if end is None and not turn.tool_calls and turn.stop != "max_tokens":
        end = NO_TOOL_CALL
    return end


class EpisodeCancelled(Exception):
    """The run is being interrupted; this episode is dropped and will run again on resume."""


@dataclass(kw_only=True)
class EpisodeEnv(EpisodeResources):
    """What every episode of a run shares: the environment's resources, the agent to play, and
    the run's cancel flag."""

    make_agent: Callable[[], Agent]
    cancel: threading.Event = field(default_factory=threading.Event)


class Episode:
    def __init__(self, env: EpisodeEnv, index: int, folder: Path) -> None:
        self.env = env
        self.index = index
        self.seed = env.settings.task.seed + index
        self.folder = folder
        self.usage = Usage()

    def run(self) -> EpisodeRecord:
        started, clock = utc_now(), time.perf_counter()
        episode = EnvEpisode(self.env, self.seed, index=self.index, folder=self.folder)
        error: str | None = None
        result: Grade | None = None
        try:
            result = self._converse(self.env.make_agent(), episode)
        except EpisodeCancelled:
            episode.close()
            raise
        except AgentError as exc:
            error = f"model API: {exc}"
        except SandboxError as exc:
            error = f"sandbox: {exc}"
        except Exception as exc:  # a harness fault: keep the run going, keep the evidence
            error = f"harness fault: {type(exc).__name__}: {exc}"
            episode.log({"type": "harness_fault", "traceback": traceback.format_exc()})
        if error is not None:
            episode.log({"type": "error", "message": error})
        episode.close()
        return self._record(episode, result, error, started, time.perf_counter() - clock)

    def _converse(self, agent: Agent, episode: EnvEpisode) -> Grade:
        """Play the agent's turns through ``episode`` until it ends; its grade."""
        observation = episode.open(agent=agent.name)
        agent.begin(observation.system_prompt, observation.task_prompt, TOOL_SPECS)
        results: list[ToolResult] = []
        while True:
            if self.env.cancel.is_set():
                raise EpisodeCancelled
            turn = agent.next_turn(results)
            self.usage.add(turn.usage)
            self._log_turn(episode, turn)
            if turn.text and self.env.on_event is not None:
                self.env.on_event(self.index, "text", turn.text)
            end = turn_end(turn)
            step: StepResult = episode.step([] if end else turn.tool_calls, end=end)
            if step.done:
                assert step.grade is not None
                return step.grade
            results = step.tool_results

    def _log_turn(self, episode: EnvEpisode, turn: Turn) -> None:
        for record in turn.records:
            episode.log({"type": "api_call", **record})
        episode.log(
            {
                "type": "turn",
                "step": episode.steps + 1,
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

    def _record(
        self,
        episode: EnvEpisode,
        result: Grade | None,
        error: str | None,
        started: str,
        wall_s: float,
    ) -> EpisodeRecord:
        settings = self.env.settings
        common: dict[str, Any] = {
            "index": self.index,
            "seed": self.seed,
            "model": settings.agent.model,
            "preset": settings.task.preset,
            "steps": episode.steps,
            "tool_calls": episode.tool_calls,
            "submit_attempts": episode.submission.attempts,
            "restarts": episode.restarts,
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
