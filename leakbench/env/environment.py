"""Episodes for a trainer or an evaluation loop of one's own (SPEC §10): ``reset`` gives the
prompts and tool schemas, ``step`` runs a turn's tool calls in the episode's sandbox, and the
last step carries the grade and the reward.

The episode is the one ``leakbench run`` plays (``leakbench.env.episode``): the same sandbox,
step limit, submission checks and grader, under a fresh secret instance key per environment.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from leakbench.agents.base import ToolCall, ToolResult
from leakbench.env.episode import (
    EnvEpisode,
    EpisodeResources,
    Observation,
    StepResult,
    sandbox_slots,
)
from leakbench.env.tools import parse_arguments
from leakbench.grading.grade import Grade
from leakbench.sandbox import SandboxPool
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.task.keys import check_key, new_key

__all__ = [
    "REWARDS",
    "Environment",
    "Episode",
    "Observation",
    "StepResult",
    "ToolCall",
    "ToolResult",
    "margin_reward",
    "pass_reward",
    "tool_calls_from",
]

Reward = Literal["pass", "margin"] | Callable[[Grade], float]


def pass_reward(grade: Grade) -> float:
    """1 for a passed episode, 0 otherwise: the verdict itself, nothing to exploit beyond it."""
    return 1.0 if grade.passed else 0.0


def margin_reward(grade: Grade) -> float:
    """The score's signed distance to the threshold (positive when it passes), in [-1, 1], for
    an episode whose every check but the threshold held; -1 for any other episode (a leak, a
    failed refit, an invalid or missing submission).

    Denser than pass/fail: a near miss is worth more than a far one. The -1 floor keeps every
    gate absolute, so no leaky pipeline ever earns more than an honest one; the ceiling check
    (a score better than the Bayes-optimal predictor fails) caps what overshooting can gain.
    """
    if not grade.gates_passed or grade.score is None:
        return -1.0
    gap = grade.threshold - grade.score if grade.lower_is_better else grade.score - grade.threshold
    return max(-1.0, min(1.0, gap))


REWARDS: dict[str, Callable[[Grade], float]] = {"pass": pass_reward, "margin": margin_reward}


def tool_calls_from(calls: Sequence[ToolCall | Mapping[str, Any]]) -> list[ToolCall]:
    """Tool calls as the episode takes them, from ``ToolCall``s or from the dicts of either API:
    Anthropic's ``tool_use`` blocks (``{"id", "name", "input"}``) or OpenAI's tool calls
    (``{"id", "function": {"name", "arguments": "<JSON>"}}``). Arguments that are not a JSON
    object become a call the episode answers with an error, as for a model."""
    made: list[ToolCall] = []
    for k, call in enumerate(calls):
        if isinstance(call, ToolCall):
            made.append(call)
            continue
        call_id = str(call.get("id") or f"call_{k}")
        function = call.get("function")
        if isinstance(function, Mapping):
            name = str(function.get("name") or "")
            tool_input, problem = parse_arguments(name, function.get("arguments"))
            made.append(ToolCall(call_id, name, tool_input, problem=problem))
            continue
        name = str(call.get("name") or "")
        tool_input = call.get("input")
        if not isinstance(tool_input, Mapping):
            problem = f"the input of this {name} call must be an object; nothing was run"
            made.append(ToolCall(call_id, name, {}, problem=problem))
        else:
            made.append(ToolCall(call_id, name, dict(tool_input)))
    return made


class EpisodeView:
    """What an episode shows of itself, read-only; ``Episode`` and ``AsyncEpisode`` share it."""

    _inner: EnvEpisode
    observation: Observation

    @property
    def seed(self) -> int:
        return self._inner.seed

    @property
    def done(self) -> bool:
        return self._inner.done

    @property
    def grade(self) -> Grade | None:
        """The full grade (``grade.json``'s content) once the episode is over."""
        return self._inner.grade

    @property
    def reward(self) -> float | None:
        return self._inner.reward

    @property
    def steps(self) -> int:
        return self._inner.steps

    @property
    def end_reason(self) -> str | None:
        """Why the episode ended without a valid submission, once it has (None otherwise)."""
        return self._inner.end_reason

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """The harness's events (tool results, submissions, sandbox calls) so far; for an
        episode with a folder they are in its ``transcript.jsonl`` instead."""
        return self._inner.transcript_events


class Episode(EpisodeView):
    """One episode of an ``Environment``: ``observation`` to start from, ``step`` per agent turn,
    ``close`` when done with it (also releases an episode abandoned before its end)."""

    def __init__(self, inner: EnvEpisode, observation: Observation) -> None:
        self._inner = inner
        self.observation = observation

    def step(
        self, tool_calls: Sequence[ToolCall | Mapping[str, Any]], *, end: str | None = None
    ) -> StepResult:
        """One agent turn: run its tool calls in order (``ToolCall``s, or either API's dicts);
        ``end="why"`` when the agent stopped without one (the episode is graded now).

        Returns each call's result, whether the episode is over, and then its grade and
        reward. It ends at the first valid submission, at ``agent.max_steps`` steps, or at
        ``end``; a step after the end is an error.
        """
        return self._inner.step(tool_calls_from(tool_calls), end=end)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Environment:
    """Leakbench episodes on demand, sharing one sandbox pool, one secret key and one set of
    settings; safe to use from many threads at once (one thread per episode at a time).

    ``settings``: resolved settings (default: the ``preset``'s). ``reward``: ``"pass"`` (1 or
    0, the default), ``"margin"`` (see ``margin_reward``) or a function of the ``Grade``.
    ``pool``: a sandbox pool to use and leave open; by default the environment makes its own
    and ``close`` ends it. ``key``: the secret instance key (default: a fresh one, never shown;
    pass the same bytes to draw the same instances again). ``results_dir``: when given, each
    episode's files (instance, transcript, submission, grade) go to a new folder
    ``results_dir/seed<seed>-<random>/``; otherwise nothing is written and the transcript is
    kept in memory.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        preset: str = "default",
        reward: Reward = "pass",
        pool: SandboxPool | None = None,
        key: bytes | None = None,
        results_dir: Path | None = None,
    ) -> None:
        from leakbench.env.prompts import build_prompts

        if settings is None:
            settings = resolve(SettingsSources(preset=preset))
        if callable(reward):
            reward_fn = reward
        elif reward in REWARDS:
            reward_fn = REWARDS[reward]
        else:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)} or a function")
        self.settings = settings
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else SandboxPool()
        self.pool.launch()
        self._shared = EpisodeResources(
            settings=settings,
            pool=self.pool,
            prompts=build_prompts(settings),
            sandbox_slots=sandbox_slots(settings),
            instance_key=None if settings.task.public_seeds else _key(key),
            reward=reward_fn,
        )
        self._results_dir = results_dir
        self._seeds = itertools.count(settings.task.seed)
        self._opened = itertools.count()
        self._lock = threading.Lock()
        self._episodes: weakref.WeakSet[EnvEpisode] = weakref.WeakSet()
        self._closed = False

    def reset(self, seed: int | None = None) -> Episode:
        """A new episode on instance ``seed`` (default: the next seed from ``task.seed``), its
        sandbox started; ``episode.observation`` holds the prompts and tool schemas."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the environment is closed")
            if seed is None:
                seed = next(self._seeds)
            n = next(self._opened)
        folder = None
        if self._results_dir is not None:
            # A fresh folder even when another environment writes to the same place.
            Path(self._results_dir).mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"seed{seed}-", dir=self._results_dir))
        inner = EnvEpisode(self._shared, seed, index=n, folder=folder)
        try:
            observation = inner.open()
        except BaseException:
            inner.close()
            raise
        self._episodes.add(inner)
        return Episode(inner, observation)

    def close(self) -> None:
        """Release every episode still open, and the pool if the environment made it."""
        with self._lock:
            self._closed = True
            episodes = list(self._episodes)
        for episode in episodes:
            episode.close()
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> Environment:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _key(key: bytes | None) -> bytes:
    return new_key() if key is None else check_key(key)
