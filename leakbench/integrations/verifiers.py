"""leakbench as a ``verifiers`` environment (verifiers 0.4 or newer, its ``verifiers.v1`` API;
the extra ``pip install 'leakbench[verifiers]'``).

verifiers builds an environment from a taskset (the rows and how each rollout is scored), a
harness (the program that runs the model) and an ``Env`` (how one task becomes one episode):

- ``LeakbenchTaskset``: row i is leakbench instance ``seed + i``, prompted with leakbench's
  system and task prompts. ``LeakbenchTask`` opens one leakbench episode per rollout; its
  reward is the episode's (``pass`` or ``margin``), its metrics the score, whether a leak was
  detected and the calibration metrics of the grade.
- ``LeakbenchHarness``: leakbench's own OpenAI-compatible agent loop (the one ``leakbench run
  --model openai/...`` plays), run in this process with leakbench's two tools only, each call
  run in the rollout's leakbench sandbox. Every model call goes through verifiers'
  interception, which records the trace and applies verifiers' model and sampling settings.
  Other harnesses (bash, codex, ...) would give the model a shell outside leakbench's
  sandbox, so the tasks refuse them.
- ``LeakbenchEnv``: one agent, on the subprocess runtime (the harness runs in this process;
  the model's code runs in leakbench's sandbox, never in that runtime); it keeps the leakbench
  environment (sandbox pool, secret key) while verifiers serves it, and closes it after.

verifiers loads a taskset by id, importing the top-level module of that name: leakbench ships
``leakbench_verifiers``, which exports these classes, so ``vf-eval leakbench-verifiers`` finds
them in any process (``python -m leakbench.integrations.verifiers`` is the same with the id
filled in). The secret
instance key stays in the leakbench environment: never in a row, a prompt, a config or a trace
(``key_dir`` names a folder holding ``instance.key``, such as a run's ``private/``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from leakbench.errors import LeakbenchError

if TYPE_CHECKING:
    from leakbench.agents.base import Turn
    from leakbench.agents.openai import OpenAIAgent
    from leakbench.env import AsyncEnvironment, AsyncEpisode, StepResult
    from leakbench.settings import Settings

try:
    import verifiers.v1 as vf
except ImportError:  # the extra is not installed: load_environment says how to get it
    vf = None

__all__ = [
    "TASKSET_ID",
    "LeakbenchEnv",
    "LeakbenchHarness",
    "LeakbenchTask",
    "LeakbenchTaskset",
    "load_environment",
]

TASKSET_ID = "leakbench-verifiers"
INSTALL = "pip install 'leakbench[verifiers]'"
ROLLOUT_ENDED = "the rollout ended before the episode did"
OWN_HARNESS = (
    "leakbench tasks run only under leakbench's own harness: another one would give the model "
    "tools outside leakbench's sandbox (leave --env.agent.harness unset)"
)
IN_PROCESS = (
    "leakbench's harness runs in this process and reaches the model from here: use the "
    "subprocess runtime (--env.agent.runtime.type subprocess, the default)"
)
# The grade's calibration metrics, recorded as verifiers metrics when the grade has them.
CALIBRATION = ("brier", "log_loss", "ece", "holdout_brier")
# Model calls in flight at once (threads waiting on the server); the sandbox calls have the
# leakbench environment's own threads, and its CPU bound (run.sandbox_concurrency).
MODEL_THREADS = 256


def load_environment(
    preset: str = "default",
    n: int = 100,
    seed: int = 0,
    reward: str = "pass",
    **kwargs: Any,
) -> Any:
    """A verifiers ``Env`` whose rows are leakbench instances ``seed`` to ``seed + n - 1`` of
    ``preset``, rewarded by leakbench's grade (``reward``: ``"pass"`` or ``"margin"``).

    ``kwargs`` are further taskset knobs: ``config`` (leakbench settings files, later wins),
    ``settings`` (dotted keys, e.g. ``{"grading.threshold": 0.05}``) and ``key_dir`` (a folder
    holding the instance key; default: a fresh secret key). The environment is built by
    verifiers' own loader from its config (``env.config``), so ``vf-eval`` and
    ``run_eval(EvalConfig(env=env.config, ...))`` build the same one.
    """
    if vf is None:
        raise LeakbenchError(f"the verifiers environment needs verifiers 0.4 or newer: {INSTALL}")
    taskset = {"id": TASKSET_ID, "preset": preset, "n": n, "seed": seed, "reward": reward}
    return vf.load_environment(vf.resolve_env_config({"taskset": {**taskset, **kwargs}}))


def main(argv: Sequence[str] | None = None) -> None:
    """``vf-eval`` with this module importable by its id; the id may be left out:
    ``python -m leakbench.integrations.verifiers -m MODEL --client.base-url URL ...``."""
    if vf is None:
        raise SystemExit(f"the verifiers environment needs verifiers 0.4 or newer: {INSTALL}")
    from verifiers.v1.cli.eval.main import main as vf_eval

    args = list(sys.argv[1:] if argv is None else argv)
    named = any(a.startswith(("--env.taskset.id", "@")) for a in args)
    if not named and (not args or args[0].startswith("-")):
        args.insert(0, TASKSET_ID)
    vf_eval(args)


class _Play:
    """One rollout's leakbench episode and the thread pool for its model calls. Its steps never
    overlap (``AsyncEpisode`` waits for a step whose rollout was cancelled)."""

    def __init__(
        self, episode: AsyncEpisode, settings: Settings, threads: ThreadPoolExecutor
    ) -> None:
        self.episode = episode
        self.settings = settings
        self._threads = threads

    @property
    def done(self) -> bool:
        return self.episode.done

    async def next_turn(self, agent: OpenAIAgent, results: list[Any]) -> Turn:
        """The agent's next turn (a blocking model call, made on a thread of its own)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, agent.next_turn, results
        )

    async def step(self, tool_calls: Sequence[Any], end: str | None = None) -> StepResult:
        return await self.episode.step(tool_calls, end=end)

    async def finish(self, why: str) -> None:
        """End the episode (graded now) unless it has ended."""
        await self.episode.wait()
        if not self.episode.done:
            await self.episode.step([], end=why)

    async def close(self) -> None:
        """Release the sandbox (idempotent); an episode that has not ended is not graded."""
        await self.episode.close()

    def record(self) -> dict[str, Any]:
        """What the trace keeps of the ended episode: the grade (``grade.json``'s content),
        the reward, the steps and why it ended without a valid submission, if it did."""
        grade = self.episode.grade
        assert grade is not None, "record() before the episode ended"
        return {
            "seed": self.episode.seed,
            "reward": self.episode.reward,
            "steps": self.episode.steps,
            "end_reason": self.episode.end_reason,
            "grade": grade.model_dump(mode="json"),
        }


class _Episodes:
    """The leakbench environment behind a taskset's rollouts (its sandbox pool and secret
    key): started by the first rollout, closed with the verifiers environment. The taskset's
    views and tasks share it; it is never copied."""

    def __init__(self, settings: Settings, reward: str, key: bytes | None) -> None:
        self.settings = settings
        self._reward = reward
        self._key = key
        self._env: AsyncEnvironment | None = None
        self._threads: ThreadPoolExecutor | None = None  # for the model calls
        self._lock = threading.Lock()

    async def open(self, seed: int) -> _Play:
        """A new episode on instance ``seed``, its sandbox started."""
        env, threads = await asyncio.to_thread(self._start)
        return _Play(await env.reset(seed), self.settings, threads)

    async def close(self) -> None:
        """Close every episode still open, and the sandbox pool."""
        with self._lock:
            env, self._env = self._env, None
            threads, self._threads = self._threads, None
        if env is not None:
            await env.close()
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> tuple[AsyncEnvironment, ThreadPoolExecutor]:
        from leakbench.env import AsyncEnvironment

        with self._lock:
            if self._env is None or self._threads is None:
                self._env = AsyncEnvironment(self.settings, reward=self._reward, key=self._key)
                self._threads = ThreadPoolExecutor(MODEL_THREADS, "leakbench-model")
            return self._env, self._threads

    def __deepcopy__(self, memo: dict[int, Any]) -> _Episodes:
        return self  # a task copied for deferred scoring still shares the live environment


def _record(trace: Any) -> dict[str, Any]:
    record = trace.info.get("leakbench")
    if record is None:
        raise LeakbenchError("the trace holds no leakbench grade (its episode never ended)")
    return record


if vf is not None:

    class LeakbenchData(vf.TaskData):
        """A row: the instance's seed, and the prompts every instance of the settings shares."""

        seed: int

    class LeakbenchState(vf.State):
        """A rollout's live state: its leakbench episode (never serialised)."""

        model_config = ConfigDict(arbitrary_types_allowed=True)

        play: _Play | None = Field(default=None, exclude=True)

    class LeakbenchTask(vf.Task[LeakbenchData, LeakbenchState, vf.TaskConfig]):
        """One leakbench instance: ``setup`` opens the rollout's episode, ``finalize`` ends it
        (graded) and records the grade, which the reward and the metrics read."""

        def __init__(
            self,
            data: LeakbenchData,
            config: vf.TaskConfig | None = None,
            *,
            episodes: _Episodes | None = None,
        ) -> None:
            super().__init__(data, config)
            self._episodes = episodes

        async def setup(self, trace: vf.Trace, runtime: vf.Runtime) -> None:
            # Checked here too, not only by LeakbenchEnv: another env (--env.id) may play
            # these tasks with any harness.
            harness = trace.agent.config.harness if trace.agent is not None else None
            if not isinstance(harness, LeakbenchHarnessConfig):
                raise vf.TaskError(f"{OWN_HARNESS}; got {getattr(harness, 'id', None)!r}")
            if self._episodes is None:
                raise vf.TaskError("this task was not loaded by LeakbenchTaskset")
            trace.state.play = await self._episodes.open(self.data.seed)

        async def finalize(self, trace: vf.Trace, runtime: vf.Runtime) -> None:
            play = trace.state.play
            if play is None:
                return
            # A rollout stopped by verifiers (its agent timeout) still gets its grade. The
            # sandbox is released by the harness's cleanup, which runs after every rollout.
            await play.finish(ROLLOUT_ENDED)
            trace.info["leakbench"] = play.record()

        @vf.reward
        async def leakbench(self, trace: vf.Trace) -> float:
            """The episode's reward: leakbench's verdict (``pass``) or its margin."""
            return float(_record(trace)["reward"])

        @vf.metric
        async def grade_metrics(self, trace: vf.Trace) -> dict[str, float]:
            """Passed, the score, whether a leak was detected, steps, and the calibration
            metrics the grade has (none without a valid submission)."""
            record = _record(trace)
            grade = record["grade"]
            values = {
                "passed": float(grade["passed"]),
                "leak_detected": float(len(grade["leaks_detected"]) > 0),
                "steps": float(record["steps"]),
            }
            if grade["score"] is not None:
                values["score"] = float(grade["score"])
            for name in CALIBRATION:
                if grade["metrics"].get(name) is not None:
                    values[name] = float(grade["metrics"][name])
            return values

    class LeakbenchTasksetConfig(vf.TasksetConfig):
        """The rows (``--env.taskset.*``)."""

        preset: str = "default"
        """leakbench preset: default, disguised or seed."""
        n: int = Field(100, ge=1)
        """Rows: instances seed, seed + 1, ..., seed + n - 1."""
        seed: int = Field(0, ge=0)
        """The first row's instance seed."""
        reward: Literal["pass", "margin"] = "pass"
        """pass: 1 when the episode passed, else 0; margin: the signed distance to the
        threshold in [-1, 1] when every other check held, else -1."""
        config: list[Path] = Field(default_factory=list)
        """leakbench settings files (TOML) over the preset, later wins."""
        settings: dict[str, Any] = Field(default_factory=dict)
        """Settings over the files, by dotted key, e.g. {"grading.threshold": 0.05}."""
        key_dir: Path | None = None
        """A folder holding the instance key (instance.key); default: a fresh secret one."""

    class LeakbenchTaskset(vf.Taskset[LeakbenchTask, LeakbenchTasksetConfig]):
        """leakbench instances ``seed`` to ``seed + n - 1`` under the resolved settings
        (preset < config files < ``LEAKBENCH_*`` variables < ``settings``)."""

        def __init__(self, config: LeakbenchTasksetConfig) -> None:
            from leakbench.env.prompts import build_prompts
            from leakbench.settings import SettingsSources, resolve
            from leakbench.task.keys import read_key

            super().__init__(config)
            settings = resolve(
                SettingsSources(
                    preset=config.preset,
                    config_files=list(config.config),
                    flags=dict(config.settings),
                )
            )
            key = read_key(config.key_dir) if config.key_dir is not None else None
            self.settings = settings
            self.prompts = build_prompts(settings)  # (system, task): the same for every seed
            self.episodes = _Episodes(settings, config.reward, key)

        def load(self) -> Iterator[LeakbenchTask]:
            system, task = self.prompts
            for i in range(self.config.n):
                seed = self.config.seed + i
                data = LeakbenchData(
                    seed=seed, name=f"seed {seed}", prompt=task, system_prompt=system
                )
                yield LeakbenchTask(data, self.config.task, episodes=self.episodes)

    class LeakbenchHarnessConfig(vf.HarnessConfig):
        """No knobs of its own: the agent's limits (steps, tokens per reply, temperature,
        retries, request timeout) are leakbench's settings; verifiers' model and sampling
        settings override them on the way to the model."""

    class LeakbenchHarness(vf.Harness[LeakbenchHarnessConfig]):
        """leakbench's OpenAI-compatible agent loop in this process: each model call through
        verifiers' interception, each tool call in the rollout's leakbench sandbox, until the
        episode ends."""

        APPENDS_SYSTEM_PROMPT = True
        SUPPORTS_MCP = False  # the tools are leakbench's two, nothing else
        EXECUTES_CODE = False  # the model's code runs in leakbench's sandbox, not the runtime
        NEEDS_CONTAINER = False

        async def setup(self, runtime: vf.Runtime) -> None:
            if not isinstance(runtime.config, vf.SubprocessConfig):
                raise vf.HarnessError(f"{IN_PROCESS}; got {runtime.config.type}")

        async def launch(
            self,
            ctx: vf.ModelContext,
            trace: vf.Trace,
            runtime: vf.Runtime,
            endpoint: str,
            secret: str,
            mcp_urls: dict[str, str],
            data: vf.TaskData,
        ) -> vf.ProgramResult:
            import openai

            from leakbench.agents.openai import OpenAIAgent

            play = trace.state.play
            if play is None:
                raise vf.HarnessError("no leakbench episode: LeakbenchTask opens one in setup")
            run = play.settings.run
            client = openai.OpenAI(
                api_key=secret,
                base_url=endpoint,
                max_retries=run.max_retries,
                timeout=run.request_timeout_s,
            )
            try:
                agent = OpenAIAgent(ctx.model, play.settings.agent, run, None, client)
                system, prompt = self.resolve_text_prompt(data)
                agent.begin(system or "", prompt or "", play.episode.observation.tools)
                await _converse(agent, play, trace)
            finally:
                client.close()
            return vf.ProgramResult(exit_code=0, stdout="", stderr="")

        async def cleanup(self, trace: vf.Trace, runtime: vf.Runtime) -> None:
            # verifiers runs this after every rollout, failed or cancelled too (the task's
            # finalize runs only when nothing failed): the sandbox is released either way.
            play = getattr(trace.state, "play", None)
            if play is not None:
                await play.close()

    class LeakbenchEnvConfig(vf.EnvConfig):
        """One agent (``--env.agent.*``), on the subprocess runtime unless told otherwise."""

        agent: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())

    class LeakbenchEnv(vf.Env[LeakbenchEnvConfig]):
        """The agent plays each task once per episode; the leakbench environment behind the
        rollouts closes when verifiers stops serving."""

        def __init__(self, config: LeakbenchEnvConfig) -> None:
            super().__init__(config)
            agent = config.agent
            if agent.harness is not None and not isinstance(agent.harness, LeakbenchHarnessConfig):
                raise ValueError(f"{OWN_HARNESS}; got {agent.harness.id!r}")
            if not isinstance(agent.runtime, vf.SubprocessConfig):
                raise ValueError(f"{IN_PROCESS}; got {agent.runtime.type}")

        async def run(self, task: vf.Task, agents: vf.Agents) -> None:
            await agents.agent.run(task)

        async def stop(self) -> None:
            await self.taskset.episodes.close()

    async def _converse(agent: OpenAIAgent, play: _Play, trace: vf.Trace) -> None:
        """Play the agent's turns through the episode until it ends, as ``leakbench run``
        does (runner/episode.py): the same stops, the same end without a tool call."""
        from leakbench.agents.base import AgentError
        from leakbench.runner.episode import turn_end

        results: list[Any] = []
        while not play.done:
            try:
                turn = await play.next_turn(agent, results)
            except AgentError:
                if trace.stop_condition is None:
                    raise
                # verifiers refused the call (a turn or token limit, a @stop): grade now.
                await play.finish(f"verifiers stopped the rollout ({trace.stop_condition})")
                return
            end = turn_end(turn)
            step = await play.step([] if end else turn.tool_calls, end=end)
            results = step.tool_results


if __name__ == "__main__":
    from leakbench.integrations.verifiers import main as _main  # the classes, imported once

    _main()
